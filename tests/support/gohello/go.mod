module example.com/mke-gohello

go 1.22
