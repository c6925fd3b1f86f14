package main
import (
 _ "go.yaml.in/yaml/v3"
 _ "github.com/expr-lang/expr"
 _ "golang.org/x/crypto/ssh"
 _ "golang.org/x/crypto/ssh/knownhosts"
 _ "golang.org/x/crypto/ssh/agent"
 _ "k8s.io/client-go/kubernetes"
 _ "k8s.io/client-go/dynamic"
 _ "k8s.io/client-go/tools/clientcmd"
 _ "github.com/spf13/pflag"
)
func main(){}
