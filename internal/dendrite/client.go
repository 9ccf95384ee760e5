package dendrite

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultUser is the localpart seeding and listing use unless told otherwise.
const DefaultUser = "seeder"

// Client is a user of one Dendrite's client API, registered with the server's shared secret.
type Client struct {
	base   string
	http   *http.Client
	token  string
	UserID string
	logf   func(string, ...any)
}

// Login registers user (DefaultUser when empty) on the client API of the Dendrite in Dir, or
// logs in when the user exists. It needs Dir's registration secret and HTTPPort only, so it
// works on a Dendrite another process started.
func (p *Peer) Login(ctx context.Context, user string) (*Client, error) {
	if !validPort(p.HTTPPort) {
		return nil, fmt.Errorf("dendrite client API port must be 1-65535, not %d", p.HTTPPort)
	}
	b, err := os.ReadFile(secretPath(p.Dir))
	if err != nil || strings.TrimSpace(string(b)) == "" {
		return nil, fmt.Errorf("%s has no registration_shared_secret (start the Dendrite first): %v", p.Dir, err)
	}
	if user == "" {
		user = DefaultUser
	}
	c := &Client{
		base: p.ClientURL(),
		http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			Proxy:               nil, // loopback only: never through a proxy
		}},
		logf: p.logf,
	}
	if err := c.login(ctx, user, strings.TrimSpace(string(b))); err != nil {
		return nil, err
	}
	return c, nil
}

// matrixError is an error answer of the client API.
type matrixError struct {
	Status  int
	ErrCode string `json:"errcode"`
	Message string `json:"error"`
}

func (e *matrixError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.ErrCode, e.Message)
}

// do sends one request and decodes a 200 answer into out. Transient failures (transport
// errors, 5xx, 429) are retried a bounded number of times; the caller makes the request
// idempotent (PUT with a transaction ID, or GET).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("%s %s: encode: %w", method, path, err)
		}
	}
	const attempts = 6
	var last error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			delay := time.Duration(100<<i) * time.Millisecond
			var me *matrixError
			if errors.As(last, &me) && me.Status == http.StatusTooManyRequests {
				delay = time.Second
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(delay):
			}
		}
		retry, err := c.once(ctx, method, path, payload, out)
		if !retry {
			return err
		}
		last = err
	}
	return last
}

// once is one attempt of do; retry says whether a failure is worth another.
func (c *Client) once(ctx context.Context, method, path string, payload []byte, out any) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(payload))
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return true, fmt.Errorf("%s %s: %w", method, path, err)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	resp.Body.Close()
	if err != nil {
		return true, fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		me := &matrixError{Status: resp.StatusCode}
		_ = json.Unmarshal(data, me)
		if me.ErrCode == "" {
			me.Message = strings.TrimSpace(string(data))
		}
		transient := resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
		return transient, fmt.Errorf("%s %s: %w", method, path, me)
	}
	if out == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return false, fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return false, nil
}

// login registers user through the shared-secret endpoint (/_synapse/admin/v1/register,
// which Dendrite serves when registration_shared_secret is set) or, when the user exists
// already, logs in with the password derived from the secret.
func (c *Client) login(ctx context.Context, user, secret string) error {
	// Unchanged from the former hack/dendrite-seed, so that users it registered in kept
	// directories can still log in.
	pw := hmac.New(sha256.New, []byte(secret))
	pw.Write([]byte("dendrite-seed password\x00" + user))
	password := hex.EncodeToString(pw.Sum(nil))[:32]

	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := c.do(ctx, http.MethodGet, "/_synapse/admin/v1/register", nil, &nonce); err != nil {
		return fmt.Errorf("registering %q: %w", user, err)
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(strings.Join([]string{nonce.Nonce, user, password, "notadmin"}, "\x00")))
	var session struct {
		AccessToken string `json:"access_token"`
		UserID      string `json:"user_id"`
	}
	err := c.do(ctx, http.MethodPost, "/_synapse/admin/v1/register", map[string]any{
		"nonce":    nonce.Nonce,
		"username": user,
		"password": password,
		"admin":    false,
		"mac":      hex.EncodeToString(mac.Sum(nil)),
	}, &session)
	var me *matrixError
	if errors.As(err, &me) && me.ErrCode == "M_USER_IN_USE" {
		err = c.do(ctx, http.MethodPost, "/_matrix/client/v3/login", map[string]any{
			"type":       "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": user},
			"password":   password,
		}, &session)
	}
	if err != nil {
		return fmt.Errorf("registering or logging in %q: %w", user, err)
	}
	if session.AccessToken == "" {
		return fmt.Errorf("no access token for %q", user)
	}
	c.token, c.UserID = session.AccessToken, session.UserID
	return nil
}

func roomPath(roomID string) string { return "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) }

// join joins room, over federation through server when it is not empty.
func (c *Client) join(ctx context.Context, room, server string) error {
	path := "/_matrix/client/v3/join/" + url.PathEscape(room)
	if server != "" {
		path += "?server_name=" + url.QueryEscape(server)
	}
	if err := c.do(ctx, http.MethodPost, path, map[string]any{}, nil); err != nil {
		return fmt.Errorf("joining %s: %w", room, err)
	}
	return nil
}

// Invite invites userID to room; for a user of another server, Dendrite asks that server to
// countersign the invite (PUT /v2/invite) before it answers, and fails when it refuses.
func (c *Client) Invite(ctx context.Context, room, userID string) error {
	if err := c.do(ctx, http.MethodPost, roomPath(room)+"/invite", map[string]string{"user_id": userID}, nil); err != nil {
		return fmt.Errorf("inviting %s to %s: %w", userID, room, err)
	}
	return nil
}
