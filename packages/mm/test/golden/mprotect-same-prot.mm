# mprotect to the protection a VMA already has does not split it, so THPs keep their PMDs.
mmap h 4M huge
touch h 0 4M w
mprotect h 1M 2M rw
dump h
# A real change of the same range splits the VMA at 1M and 3M, and both PMDs with it.
mprotect h 1M 2M r
dump h
