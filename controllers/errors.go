package controllers

import (
	"errors"
	"time"
)

// The three kinds of reconcile error, as Flux classifies them. A step returns one of these
// (or a plain error, which is transient) and the reconcile skeleton turns it into conditions,
// an Event and a requeue decision in one place.

// stallingError is terminal: retrying cannot help until the spec changes, so the object is
// marked Stalled and not requeued.
type stallingError struct {
	Reason string
	Err    error
}

func (e *stallingError) Error() string { return e.Err.Error() }
func (e *stallingError) Unwrap() error { return e.Err }

// waitingError means progress depends on something outside (a peer, a back-off): the object
// is requeued after RequeueAfter without counting as a controller failure.
type waitingError struct {
	Reason       string
	Err          error
	RequeueAfter time.Duration
}

func (e *waitingError) Error() string { return e.Err.Error() }
func (e *waitingError) Unwrap() error { return e.Err }

// asStalling reports whether err is (or wraps) a stallingError.
func asStalling(err error) (*stallingError, bool) {
	var s *stallingError
	ok := errors.As(err, &s)
	return s, ok
}

// asWaiting reports whether err is (or wraps) a waitingError.
func asWaiting(err error) (*waitingError, bool) {
	var w *waitingError
	ok := errors.As(err, &w)
	return w, ok
}
