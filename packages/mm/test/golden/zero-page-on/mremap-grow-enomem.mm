# Growing a range followed by the rest of its mapping gives ENOMEM without MREMAP_MAYMOVE and moves with it, keeping frames and taking no faults.
mmap a 64K
touch a 0 64K w
mremap a 0 32K 48K
mremap a 0 32K 48K maymove
dump a
touch a 0 48K w
dump a
