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
)

func handle(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	switch query.Get("op") {
	case "echo":
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "echo: %s\n", query.Get("word"))
	case "hash":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "length: %d\nmd5: %x\n", len(body), md5.Sum(body))
	case "big":
		lines, _ := strconv.Atoi(query.Get("lines"))
		w.Header().Set("Content-Type", "application/octet-stream")
		for i := 0; i < lines; i++ {
			fmt.Fprintf(w, "%015d\n", i)
		}
	default:
		w.Header().Set("X-Interop", "go")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "teapot\n")
	}
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
