package federation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
)

// Defaults of a Server's limits. Federation requests are small and quick, and the listener
// faces the internet: a client that sends slowly or endlessly must not hold a connection or
// memory for long.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds the whole request, body included, so a client trickling its
	// body one byte at a time is cut off.
	DefaultReadTimeout  = 30 * time.Second
	DefaultWriteTimeout = time.Minute
	DefaultIdleTimeout  = 2 * time.Minute
	// DefaultMaxHeaderBytes holds an X-Matrix Authorization header many times over.
	DefaultMaxHeaderBytes = 16 << 10

	// KeyQueryMaxBody bounds a POST /_matrix/key/v2/query body: a few bytes per server name
	// and key ID asked for, so 64 KiB holds hundreds of them.
	KeyQueryMaxBody = 64 << 10
)

// Server is our federation listener: the http.Server settings, the routes, the per-route
// body limits and the Matrix JSON answers to requests no route takes. Every endpoint we serve
// is registered on one Server, so each gets the same protection.
//
// Set the fields before the first Serve; NewServer fills them with the defaults.
type Server struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// OriginRate and OriginBurst limit the authenticated requests of each origin (requests a
	// second, and how many may come at once); past them it gets 429 M_LIMIT_EXCEEDED.
	OriginRate  float64
	OriginBurst int

	mux    *http.ServeMux
	routes []Route
	// auth checks the X-Matrix signatures of HandleAuthenticated routes (see RequireAuth).
	auth *mfed.ServerAuth
	// limiter is made from OriginRate and OriginBurst at the first authenticated request.
	limiter     *originLimiter
	limiterOnce sync.Once

	once sync.Once
	srv  *http.Server
}

// NewServer returns a Server with the default limits and no routes.
func NewServer() *Server {
	return &Server{
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		OriginRate:        DefaultOriginRate,
		OriginBurst:       DefaultOriginBurst,
		mux:               http.NewServeMux(),
	}
}

// Handle routes method and path (a ServeMux path pattern such as /_matrix/key/v2/query/{name})
// to h. The body is read before h runs, up to maxBody bytes; a longer one is refused with 413
// M_TOO_LARGE, so h always gets a body held in memory and bounded. maxBody 0 is for routes
// that take no body.
func (s *Server) Handle(method, path string, maxBody int64, h http.Handler) {
	s.handle(Route{Method: method, Path: path}, maxBody, h)
}

func (s *Server) handle(route Route, maxBody int64, h http.Handler) {
	s.mux.Handle(route.Method+" "+route.Path, limitBody(maxBody, h))
	s.routes = append(s.routes, route)
}

// Route is a registered endpoint.
type Route struct {
	Method, Path string // Path as a ServeMux pattern
	// Authenticated: only requests signed by their origin (X-Matrix) get through.
	Authenticated bool
}

// Routes lists the registered endpoints, in the order registered: what the listener exposes,
// for a check that nothing is served unauthenticated by mistake.
func (s *Server) Routes() []Route { return slices.Clone(s.routes) }

// ServeHTTP answers with the route's handler, or with M_UNRECOGNIZED as the spec asks: 404
// for an unknown path, 405 for a known path asked with another method.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// ServeMux redirects a path that is not clean (a doubled slash, a dot segment) to its clean
	// form, with an HTML body. A federation request is signed over its path as sent, and its
	// sender follows no redirect: such a path is an endpoint we do not know.
	if p := r.URL.EscapedPath(); r.Method != http.MethodConnect && cleanPath(p) != p {
		mautrix.MUnrecognized.WithMessage("unrecognized endpoint").Write(w)
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		// Through the mux again, which fills in the path values Handler leaves out.
		s.mux.ServeHTTP(w, r)
		return
	}
	// The mux alone knows whether another method would have matched; let it answer into a
	// recorder and keep only its status and Allow header.
	rec := &statusRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.header.Get("Allow"))
		mautrix.MUnrecognized.WithStatus(http.StatusMethodNotAllowed).
			WithMessage("method %s is not allowed on this endpoint", r.Method).Write(w)
		return
	}
	mautrix.MUnrecognized.WithMessage("unrecognized endpoint").Write(w)
}

// cleanPath is the path ServeMux serves p as (net/http's cleanPath): rooted, without dot
// segments or doubled slashes, keeping a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// Serve accepts connections on ln until Shutdown, in plain HTTP (behind an ingress that ends
// TLS), or in TLS when certFile and keyFile are given. It returns http.ErrServerClosed after
// Shutdown.
func (s *Server) Serve(ln net.Listener, certFile, keyFile string) error {
	srv := s.httpServer()
	if certFile != "" || keyFile != "" {
		return srv.ServeTLS(ln, certFile, keyFile)
	}
	return srv.Serve(ln)
}

// Shutdown stops accepting connections and waits for open requests to end, up to ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.httpServer().Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down federation listener: %w", err)
	}
	return nil
}

// httpServer makes the http.Server once, from the fields as they are then; Shutdown before
// Serve makes it too, so that a later Serve returns at once.
func (s *Server) httpServer() *http.Server {
	s.once.Do(func() {
		s.srv = &http.Server{
			Handler:           s,
			ReadHeaderTimeout: s.ReadHeaderTimeout,
			ReadTimeout:       s.ReadTimeout,
			WriteTimeout:      s.WriteTimeout,
			IdleTimeout:       s.IdleTimeout,
			MaxHeaderBytes:    s.MaxHeaderBytes,
		}
	})
	return s.srv
}

// limitBody reads the body into memory, up to limit bytes, before h runs, and refuses a body
// nested deeper than MaxJSONDepth.
func limitBody(limit int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A declared length says it all: refuse without reading a byte.
		if r.ContentLength > limit {
			tooLarge(w, limit)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var tooLong *http.MaxBytesError
			if errors.As(err, &tooLong) {
				tooLarge(w, limit)
				return
			}
			// The client stopped sending, or the read timeout passed: the connection is
			// closed after this answer.
			w.Header().Set("Connection", "close")
			mautrix.MUnknown.WithStatus(http.StatusRequestTimeout).
				WithMessage("reading the request body: %v", err).Write(w)
			return
		}
		if err := checkJSONDepth(body); err != nil {
			mautrix.MBadJSON.WithMessage("%v", err).Write(w)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	})
}

func tooLarge(w http.ResponseWriter, limit int64) {
	// Closing tells the client to stop sending the rest, and spares the server reading it.
	w.Header().Set("Connection", "close")
	if limit == 0 {
		mautrix.MTooLarge.WithMessage("this endpoint takes no request body").Write(w)
		return
	}
	mautrix.MTooLarge.WithMessage("request body over %d bytes", limit).Write(w)
}

// statusRecorder keeps the status and headers of a response and drops its body.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header { return r.header }

func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return len(b), nil
}
