# An unaligned start address is EINVAL for mprotect, munmap and madvise, and changes nothing.
mmap a 16K
touch a 0 16K w
mprotect a 100 4K r
munmap a 100 4K
madvise a 100 4K dontneed
dump a
touch a 0 16K w
