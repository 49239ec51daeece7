# Fault-around maps only pages of the faulting VMA, so a VMA boundary clips the window.
# After mprotect splits the shared mapping, a read fault maps the cached pages of its own VMA's
# part of the 64 KiB window only.
mmap s 128K shared
touch s 0 128K w
madvise s 0 128K dontneed
mprotect s 40K 8K r
touch s 36K 4K r
dump s
touch s 40K 4K r
dump s
