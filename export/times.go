package export

import (
	"strconv"
	"time"
)

// ParseTime reads a --since or --until bound: an RFC 3339 time (2024-01-02T15:04:05Z, with
// an offset or fractional seconds if wanted) or Unix milliseconds (1704207845000), the unit
// of origin_server_ts. Anything else is ErrBadInput.
func ParseTime(s string) (time.Time, error) {
	if s != "" && isDigits(s) {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, badInput("time %q: Unix milliseconds out of range", s)
		}
		return time.UnixMilli(ms).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, badInput("time %q: want RFC 3339 (2024-01-02T15:04:05Z) or Unix milliseconds (1704207845000)", abbreviate(s))
	}
	return t, nil
}

func isDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
