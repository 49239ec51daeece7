# A zero length is a successful no-op for mprotect and madvise, but EINVAL for munmap.
mmap a 16K
touch a 0 16K w
mprotect a 0 0 r
madvise a 0 0 dontneed
munmap a 0 0
dump a
touch a 0 16K w
