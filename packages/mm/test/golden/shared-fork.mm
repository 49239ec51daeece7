# fork does not copy the PTEs of a shared mapping; the child faults in the same frames.
# Writes never copy: both processes map the shared object's frames (mapcount 2).
mmap s 64K shared
touch s 0 16K w
fork
dump s
c touch s 0 8K w
dump s
c touch s 8K 4K r
touch s 0 16K w
dump s
