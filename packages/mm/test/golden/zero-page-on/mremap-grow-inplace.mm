# mremap grows in place into free room: same frames, the new tail none; in a huge region an aligned 2 MiB of new tail faults a THP.
mmap a 2M huge
touch a 0 2M w
mremap a 0 2M 4M
dump a
touch a 2M 4K w
dump a
