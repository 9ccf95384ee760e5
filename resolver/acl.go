package resolver

import (
	"net"
	"strings"

	"github.com/tidwall/gjson"
)

// ServerACL is a room's m.room.server_acl: the servers that may take part in the room.
// mautrix-go reads the event but has no matcher for it; this one follows the spec's rules and
// Synapse's reading of them (server_acl_evaluator.py).
type ServerACL struct {
	allow, deny     []string // globs, lower-cased
	allowIPLiterals bool
}

// ParseServerACL reads the content of an m.room.server_acl event. As Synapse does, entries
// of allow and deny that are not strings are ignored, and an allow_ip_literals that is not a
// boolean counts as its default, true. An absent allow is an empty one: the spec's default,
// which denies every server.
func ParseServerACL(content []byte) ServerACL {
	acl := ServerACL{allowIPLiterals: true}
	if v := gjson.GetBytes(content, "allow_ip_literals"); v.IsBool() {
		acl.allowIPLiterals = v.Bool()
	}
	globs := func(key string) []string {
		list := gjson.GetBytes(content, key)
		if !list.IsArray() {
			return nil // gjson would read a lone string as a list of one
		}
		var out []string
		for _, g := range list.Array() {
			if g.Type == gjson.String {
				out = append(out, strings.ToLower(g.Str))
			}
		}
		return out
	}
	acl.allow, acl.deny = globs("allow"), globs("deny")
	return acl
}

// Allows reports whether a server may take part in the room. The port is not part of what is
// matched; server names compare without regard to case. A denied name is denied whatever
// allows it; a name no allow glob matches is denied; an IP literal is denied when
// allow_ip_literals is false.
func (a ServerACL) Allows(server string) bool {
	host := strings.ToLower(stripPort(server))
	if !a.allowIPLiterals && isIPLiteral(host) {
		return false
	}
	for _, g := range a.deny {
		if globMatch(g, host) {
			return false
		}
	}
	for _, g := range a.allow {
		if globMatch(g, host) {
			return true
		}
	}
	return false
}

// stripPort removes a :port from a server name, keeping an IPv6 literal's brackets (Synapse
// matches "[::1]" against the globs, brackets included).
func stripPort(server string) string {
	if strings.HasPrefix(server, "[") {
		if end := strings.IndexByte(server, ']'); end > 0 {
			return server[:end+1]
		}
		return server
	}
	if i := strings.LastIndexByte(server, ':'); i >= 0 && i < len(server)-1 &&
		strings.Trim(server[i+1:], "0123456789") == "" {
		return server[:i]
	}
	return server
}

// isIPLiteral says whether a host (without port) is an IPv4 address or a bracketed IPv6 one.
func isIPLiteral(host string) bool {
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		return net.ParseIP(host[1:len(host)-1]) != nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() != nil
}

// globMatch matches name against a glob where * is any run of characters (none included) and
// ? is exactly one. It backtracks only to the last *, so it runs in O(len(glob)·len(name))
// at worst: a hostile ACL cannot make it blow up.
func globMatch(glob, name string) bool {
	g, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case g < len(glob) && (glob[g] == '?' || glob[g] == name[n]):
			g++
			n++
		case g < len(glob) && glob[g] == '*':
			star, mark = g, n
			g++
		case star >= 0:
			// The last * takes one more character.
			mark++
			g, n = star+1, mark
		default:
			return false
		}
	}
	for g < len(glob) && glob[g] == '*' {
		g++
	}
	return g == len(glob)
}
