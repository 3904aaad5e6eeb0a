// gohello-tool is a second main package, so the test builds two binaries in one go build.
package main

import "fmt"

func main() { fmt.Println("gohello-tool") }
