package federation

import "fmt"

// MaxJSONDepth bounds the nesting of the JSON we take: request bodies on our listener and
// each PDU in a peer's answer. Homeservers' own JSON libraries stop well before (Synapse's at
// Python's recursion limit, about a thousand), so no event a room can hold is refused; a
// document nested deeper is built to exhaust whoever walks it recursively.
const MaxJSONDepth = 512

// checkJSONDepth refuses JSON nested deeper than MaxJSONDepth. It counts brackets outside
// strings, without parsing: one pass over the bytes, whatever else is wrong with them.
func checkJSONDepth(doc []byte) error {
	depth, inString, escaped := 0, false, false
	for _, c := range doc {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > MaxJSONDepth {
				return fmt.Errorf("JSON nested deeper than %d levels", MaxJSONDepth)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}
