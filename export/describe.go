package export

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/roomsync/roomsync/store"
)

// describe is the transcript's words for one event, after its time and markers.
func describe(e store.Event, prior priorState) string {
	content := gjson.GetBytes(e.Raw, "content")
	if e.StateKey != nil {
		return describeState(e, content, prior)
	}
	who := e.Sender
	switch e.Type {
	case "m.room.message":
		return describeMessage(who, content)
	case "m.sticker":
		return who + " sent a sticker" + suffix(": ", content.Get("body").Str)
	case "m.room.encrypted":
		return who + " sent an encrypted message"
	case "m.reaction":
		rel := content.Get("m\\.relates_to")
		return fmt.Sprintf("%s reacted with %s to %s", who, quoteOr(rel.Get("key"), "(no key)"), orUnknown(rel.Get("event_id").Str))
	case "m.room.redaction":
		target := gjson.GetBytes(e.Raw, "redacts").Str
		if target == "" {
			target = content.Get("redacts").Str
		}
		return who + " redacted " + orUnknown(target) + suffix(": ", content.Get("reason").Str)
	}
	return who + " sent an event of type " + e.Type
}

func describeMessage(who string, content gjson.Result) string {
	body := content.Get("body")
	if body.Type != gjson.String {
		return "<" + who + "> (no body)"
	}
	switch msgtype := content.Get("msgtype").Str; msgtype {
	case "m.text":
		return "<" + who + "> " + body.Str
	case "m.emote":
		return "* " + who + " " + body.Str
	default:
		return "<" + who + "> [" + orUnknown(msgtype) + "] " + body.Str
	}
}

func describeState(e store.Event, content gjson.Result, prior priorState) string {
	who, key := e.Sender, *e.StateKey
	// A redacted copy keeps only the keys the redaction algorithm keeps: say what changed
	// and not into what, rather than read an absent value as removed.
	stripped := func(key string) bool { return e.Redacted && !content.Get(key).Exists() }
	switch e.Type {
	case "m.room.create":
		version := content.Get("room_version").Str
		if version == "" {
			version = "1"
		}
		return fmt.Sprintf("%s created the room (room version %s)", who, version)
	case "m.room.member":
		return describeMember(e, content, prior)
	case "m.room.power_levels":
		old, ok := prior.of(e, "m.room.power_levels", "")
		if !ok {
			return who + " set the power levels"
		}
		return who + " changed the power levels" + suffix(": ", powerLevelChanges(old, content))
	case "m.room.join_rules":
		return who + " set the join rule to " + orUnknown(content.Get("join_rule").Str)
	case "m.room.history_visibility":
		return who + " set the history visibility to " + orUnknown(content.Get("history_visibility").Str)
	case "m.room.server_acl":
		if stripped("allow") {
			return who + " changed the server ACL"
		}
		return who + " changed the server ACL: " + serverACL(content)
	case "m.room.topic":
		if stripped("topic") {
			return who + " changed the topic"
		}
		if topic := content.Get("topic").Str; topic != "" {
			return who + " changed the topic to " + strconv.Quote(topic)
		}
		return who + " removed the topic"
	case "m.room.name":
		if stripped("name") {
			return who + " changed the room name"
		}
		if name := content.Get("name").Str; name != "" {
			return who + " changed the room name to " + strconv.Quote(name)
		}
		return who + " removed the room name"
	case "m.room.avatar":
		return who + " changed the room avatar"
	case "m.room.canonical_alias":
		if stripped("alias") {
			return who + " changed the room's addresses"
		}
		if alias := content.Get("alias").Str; alias != "" {
			return who + " set the main address to " + alias
		}
		return who + " changed the room's addresses"
	case "m.room.encryption":
		return who + " turned on end-to-end encryption" + suffix(" with ", content.Get("algorithm").Str)
	case "m.room.guest_access":
		return who + " set guest access to " + orUnknown(content.Get("guest_access").Str)
	case "m.room.pinned_events":
		return who + " changed the pinned events"
	case "m.room.tombstone":
		return who + " replaced the room with " + orUnknown(content.Get("replacement_room").Str) +
			suffix(": ", content.Get("body").Str)
	}
	if key == "" {
		return who + " set the state " + e.Type
	}
	return fmt.Sprintf("%s set the state %s for %s", who, e.Type, strconv.Quote(key))
}

// describeMember spells out a membership change against the membership it replaces.
func describeMember(e store.Event, content gjson.Result, prior priorState) string {
	who, target := e.Sender, *e.StateKey
	reason := suffix(": ", content.Get("reason").Str)
	old, _ := prior.of(e, "m.room.member", target)
	was := old.Get("membership").Str
	switch membership := content.Get("membership").Str; membership {
	case "join":
		if was != "join" {
			return target + " joined" + suffix(" as ", quoted(content.Get("displayname")))
		}
		return target + " " + profileChange(e.Redacted, old, content)
	case "leave":
		switch {
		case who == target && was == "invite":
			return target + " rejected the invitation" + reason
		case who == target && was == "knock":
			return target + " withdrew their knock" + reason
		case who == target:
			return target + " left" + reason
		case was == "ban":
			return target + " was unbanned by " + who + reason
		case was == "invite":
			return who + " withdrew the invitation of " + target + reason
		default:
			return target + " was kicked by " + who + reason
		}
	case "ban":
		return target + " was banned by " + who + reason
	case "invite":
		return who + " invited " + target + reason
	case "knock":
		return target + " knocked" + reason
	default:
		return fmt.Sprintf("%s set the membership of %s to %s", who, target, orUnknown(membership))
	}
}

// profileChange is what a join of a member already joined changed: display name or avatar.
func profileChange(redacted bool, before, after gjson.Result) string {
	if redacted {
		return "changed their profile"
	}
	oldName, newName := before.Get("displayname"), after.Get("displayname")
	switch {
	case oldName.Str != newName.Str && newName.Str == "":
		return "removed their display name " + quoted(oldName)
	case oldName.Str != newName.Str && oldName.Str == "":
		return "set their display name to " + quoted(newName)
	case oldName.Str != newName.Str:
		return "changed their display name from " + quoted(oldName) + " to " + quoted(newName)
	case before.Get("avatar_url").Str != after.Get("avatar_url").Str:
		return "changed their avatar"
	}
	return "joined again, unchanged"
}

// maxChanges bounds the power level changes one line lists.
const maxChanges = 6

// powerLevelChanges lists what differs between two power levels contents: each user,
// event type and threshold whose level changed ("unset" where a side has none).
func powerLevelChanges(before, after gjson.Result) string {
	var changes []string
	diff := func(label string, a, b gjson.Result) {
		if a.Raw != b.Raw {
			changes = append(changes, fmt.Sprintf("%s %s → %s", label, levelText(a), levelText(b)))
		}
	}
	for _, key := range []string{"users_default", "events_default", "state_default", "ban", "kick", "redact", "invite"} {
		diff(key, before.Get(key), after.Get(key))
	}
	for _, m := range []struct{ field, label string }{{"users", ""}, {"events", "events "}, {"notifications", "notifications "}} {
		for _, k := range unionKeys(before.Get(m.field), after.Get(m.field)) {
			diff(m.label+k, before.Get(m.field).Get(gjson.Escape(k)), after.Get(m.field).Get(gjson.Escape(k)))
		}
	}
	if len(changes) > maxChanges {
		return strings.Join(changes[:maxChanges], ", ") + fmt.Sprintf(" and %d more", len(changes)-maxChanges)
	}
	return strings.Join(changes, ", ")
}

func levelText(v gjson.Result) string {
	if !v.Exists() {
		return "unset"
	}
	return v.Raw
}

// unionKeys are the keys of two objects, in the order they come (canonical JSON: sorted).
func unionKeys(a, b gjson.Result) []string {
	seen := map[string]bool{}
	var keys []string
	for _, obj := range []gjson.Result{a, b} {
		obj.ForEach(func(k, _ gjson.Result) bool {
			if !seen[k.Str] {
				seen[k.Str] = true
				keys = append(keys, k.Str)
			}
			return true
		})
	}
	return keys
}

func serverACL(content gjson.Result) string {
	list := func(v gjson.Result) string {
		var items []string
		for _, s := range v.Array() {
			items = append(items, s.Str)
		}
		return "[" + strings.Join(items, " ") + "]"
	}
	ip := "IP literals allowed"
	if v := content.Get("allow_ip_literals"); v.Exists() && !v.Bool() {
		ip = "IP literals denied"
	}
	return "allow " + list(content.Get("allow")) + ", deny " + list(content.Get("deny")) + ", " + ip
}

// suffix is sep+s, or nothing when s is empty.
func suffix(sep, s string) string {
	if s == "" {
		return ""
	}
	return sep + s
}

// quoted is a string value in quotes, or "" when there is none.
func quoted(v gjson.Result) string {
	if v.Type != gjson.String || v.Str == "" {
		return ""
	}
	return strconv.Quote(v.Str)
}

func quoteOr(v gjson.Result, otherwise string) string {
	if q := quoted(v); q != "" {
		return q
	}
	return otherwise
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}
