package pullsecret

import (
	"reflect"
	"testing"
)

// TestTargets: the ServiceAccounts a step names, from service_accounts
// ("namespace/name") and namespaces (their service_account), deduplicated
// and sorted.
func TestTargets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ps      Params
		want    []saRef
		wantErr bool
	}{
		{"namespaces give their default ServiceAccount", Params{Namespaces: []string{"b", "a", ""}},
			[]saRef{{"a", "default"}, {"b", "default"}}, false},
		{"the ServiceAccounts of the failing pods", Params{ServiceAccounts: []string{"shop/web", "shop/worker", "shop/web"}},
			[]saRef{{"shop", "web"}, {"shop", "worker"}}, false},
		{"both, with another service_account", Params{Namespaces: []string{"shop"}, ServiceAccount: "builder", ServiceAccounts: []string{"shop/builder", "api/api"}},
			[]saRef{{"api", "api"}, {"shop", "builder"}}, false},
		{"not namespace/name", Params{ServiceAccounts: []string{"web"}}, nil, true},
		{"empty name", Params{ServiceAccounts: []string{"shop/"}}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.ps.defaults()
			got, err := targets(&tc.ps)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
