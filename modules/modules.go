// Package modules is the one explicit registry of every module nksrun has.
// Adding a module means adding one line here; nothing registers itself.
package modules

import (
	"nksrun/engine/module"
	"nksrun/modules/filesync"
	"nksrun/modules/grubarg"
	"nksrun/modules/k8spatch"
	"nksrun/modules/pullsecret"
	"nksrun/modules/reboot"
	"nksrun/modules/report"
	"nksrun/modules/rolloutrestart"
	"nksrun/modules/setimage"
	"nksrun/modules/systemdrestart"
)

// Registry returns every module by the name runbooks use.
func Registry() module.Registry {
	return module.Registry{
		"file_sync":       filesync.New,
		"report":          report.New,
		"k8s_patch":       k8spatch.New,
		"set_image":       setimage.New,
		"rollout_restart": rolloutrestart.New,
		"pull_secret":     pullsecret.New,
		"grub_arg":        grubarg.New,
		"reboot":          reboot.New,
		"systemd_restart": systemdrestart.New,
	}
}
