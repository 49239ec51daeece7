# Without the zero page, a read fault allocates a zero-filled frame, writable in a writable VMA.
# (This kernel was booted with the zero page disabled.) The later write to the pages that were
# read takes no fault.
mmap a 32K
touch a 0 16K r
dump a
touch a 0 32K w
dump a
# In a read-only VMA a read fault allocates a frame too.
mmap r 16K r
touch r 0 8K r
dump r
