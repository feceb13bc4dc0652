// Go's net/http/fcgi, standard library only: `go_fcgi LISTEN` where LISTEN is a unix socket
// path or "host:port". Every connection and every request on it gets its own goroutine.
package main

import (
	"crypto/md5"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/fcgi"
	"os"
	"strconv"
	"strings"
	"time"
)

// Every answer states its Content-Length, which net/http/fcgi sends only when the handler sets
// it, and ends late (endLate).
func handle(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	switch query.Get("op") {
	case "echo":
		reply(w, http.StatusOK, fmt.Sprintf("echo: %s\n", query.Get("word")))
	case "hash":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reply(w, http.StatusOK, fmt.Sprintf("length: %d\nmd5: %x\n", len(body), md5.Sum(body)))
	case "big":
		lines, _ := strconv.Atoi(query.Get("lines"))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(lines*16))
		for i := 0; i < lines; i++ {
			fmt.Fprintf(w, "%015d\n", i)
		}
		endLate(w)
	default:
		w.Header().Set("X-Interop", "go")
		reply(w, http.StatusTeapot, "teapot\n")
	}
}

func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	io.WriteString(w, body)
	endLate(w)
}

// endLate sends the body, then waits a moment before the handler returns and net/http/fcgi
// sends END_REQUEST, as an app that flushes and then ends does: the client has every declared
// byte while the request is still open, which the gateway must not take for a client gone
// away. Without the pause the two usually come in one read, and a gateway that got this wrong
// would seldom show it.
func endLate(w http.ResponseWriter) {
	w.(http.Flusher).Flush()
	time.Sleep(5 * time.Millisecond)
}

func main() {
	network := "tcp"
	if strings.HasPrefix(os.Args[1], "/") {
		network = "unix"
	}
	listener, err := net.Listen(network, os.Args[1])
	if err != nil {
		panic(err)
	}
	panic(fcgi.Serve(listener, http.HandlerFunc(handle)))
}
