// testapp: the image the end-to-end tests deploy (built locally, no registry).
//
//	testapp serve [addr]     HTTP server: GET / answers "<hostname> <remote addr>"; logs each request
//	testapp get URL          HTTP GET, prints the body (exit 1 on error)
//	testapp lookup NAME      resolve NAME with the pod's resolv.conf, print the addresses
//	testapp echo WORDS...    print WORDS (for exec)
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testapp serve|get|lookup|echo ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		addr := ":8080"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			log.Printf("request from %s %s", r.RemoteAddr, r.URL.Path)
			fmt.Fprintf(w, "%s %s\n", host, r.RemoteAddr)
		})
		log.Printf("testapp serving on %s as %s", addr, host)
		log.Fatal(http.ListenAndServe(addr, nil))
	case "get":
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Print(string(body))
	case "lookup":
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(strings.Join(addrs, " "))
	case "echo":
		fmt.Println(strings.Join(os.Args[2:], " "))
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
