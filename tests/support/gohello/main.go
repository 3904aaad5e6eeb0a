// gohello is the docker-mode test program: a static binary that reports its stamped version.
package main

import (
	"fmt"
	"os"
	"runtime"
)

var version = "unset"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Printf("gohello version %s %s/%s\n", version, runtime.GOOS, runtime.GOARCH)
		return
	}
	fmt.Println("hello from mke's docker mode")
}
