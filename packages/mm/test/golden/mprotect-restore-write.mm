# mprotect r then rw makes exclusive pages writable again without a fault, but not COW pages.
mmap a 16K
touch a 0 16K w
mprotect a 0 16K r
mprotect a 0 16K rw
touch a 0 16K w
fork
c touch a 0 4K w
mprotect a 0 16K r
mprotect a 0 16K rw
# Pages 1-3 are still shared with the child: each write copies. Page 0 is mapped by the parent
# alone since the child copied it, but it lost its exclusive mark at fork, so mprotect leaves it
# write-protected too and its write fault reuses the frame.
touch a 0 16K w
dump a
