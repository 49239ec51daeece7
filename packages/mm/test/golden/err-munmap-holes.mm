# munmap over holes succeeds: unmapping nothing is not an error.
mmap a 32K
touch a 0 32K w
munmap a 4K 4K
munmap a 20K 4K
munmap a 0 32K
dump a
munmap a 0 32K
