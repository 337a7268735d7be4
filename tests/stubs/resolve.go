// Lookups through Go's own stub resolver (built with CGO_ENABLED=0, and
// PreferGo besides), which reads the pod's /etc/resolv.conf. Each argument
// is `<kind>:<what>`: host:<name>, srv:<service>,<proto>,<name>,
// cname:<name>, addr:<ip>; each line printed is `<argument>\t<JSON>`, an
// array of strings (SRV records as "<target> <port>") or {"err": ...}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func lookup(r *net.Resolver, ctx context.Context, kind, what string) ([]string, error) {
	switch kind {
	case "host":
		return r.LookupHost(ctx, what)
	case "srv":
		parts := strings.SplitN(what, ",", 3)
		_, srvs, err := r.LookupSRV(ctx, parts[0], parts[1], parts[2])
		var out []string
		for _, s := range srvs {
			out = append(out, fmt.Sprintf("%s %d", s.Target, s.Port))
		}
		return out, err
	case "cname":
		c, err := r.LookupCNAME(ctx, what)
		return []string{c}, err
	case "addr":
		return r.LookupAddr(ctx, what)
	}
	return nil, fmt.Errorf("unknown lookup %q", kind)
}

func main() {
	r := &net.Resolver{PreferGo: true}
	for _, arg := range os.Args[1:] {
		kind, what, _ := strings.Cut(arg, ":")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		got, err := lookup(r, ctx, kind, what)
		cancel()
		var line []byte
		if err != nil {
			line, _ = json.Marshal(map[string]string{"err": err.Error()})
		} else {
			line, _ = json.Marshal(got)
		}
		fmt.Printf("%s\t%s\n", arg, line)
	}
}
