package main

const sysSyncfs = 306 // syncfs(2) on linux/amd64 (not in package syscall)
