package main

const sysSyncfs = 267 // syncfs(2) on linux/arm64 (not in package syscall)
