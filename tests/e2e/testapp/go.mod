module mke.test/testapp

go 1.22
