# A region whose size is not a multiple of 2 MiB gets a THP only where a whole aligned 2 MiB fits.
# Of a 3 MiB region, the first 2 MiB is one THP; the last 1 MiB gets 4 KiB pages.
mmap h 3M huge
touch h 0 3M w
dump h
