// Command testapiserver is the testbed's real Kubernetes control plane: an
// embedded etcd plus the upstream kube-apiserver, on loopback, in one process.
// It lives in its own Go module so that nksrun's go.mod does not carry
// Kubernetes' dependency graph. It is a test fixture, never shipped.
//
// Usage: testapiserver -dir DIR -port PORT -etcd-port PORT -token TOKEN
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	dir := flag.String("dir", "", "state directory (etcd data, certs, keys)")
	port := flag.Int("port", 6443, "secure port of the API server on 127.0.0.1")
	etcdPort := flag.Int("etcd-port", 2379, "etcd client port on 127.0.0.1")
	token := flag.String("token", "", "bearer token of the admin user (system:masters)")
	flag.Parse()
	if *dir == "" || *token == "" {
		log.Fatal("testapiserver: -dir and -token are required")
	}

	etcdURL := startEtcd(filepath.Join(*dir, "etcd"), *etcdPort)

	saKey := filepath.Join(*dir, "sa.key")
	if err := writeECKey(saKey); err != nil {
		log.Fatalf("testapiserver: service-account key: %v", err)
	}
	tokens := filepath.Join(*dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(fmt.Sprintf("%s,admin,admin,system:masters\n", *token)), 0o600); err != nil {
		log.Fatalf("testapiserver: token file: %v", err)
	}

	cmd := app.NewAPIServerCommand()
	cmd.SetArgs([]string{
		"--etcd-servers=" + etcdURL,
		fmt.Sprintf("--secure-port=%d", *port),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(*dir, "certs"),
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--enable-priority-and-fairness=false",
		"--disable-admission-plugins=ServiceAccount",
		"--logging-format=text",
		"-v=0",
	})
	os.Exit(cli.Run(cmd))
}

func startEtcd(dataDir string, port int) string {
	cfg := embed.NewConfig()
	cfg.Dir = dataDir
	cfg.LogLevel = "error"
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port+1)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("testapiserver: etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		log.Fatal("testapiserver: etcd not ready after 60s")
	}
	return client.String()
}

func writeECKey(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}
