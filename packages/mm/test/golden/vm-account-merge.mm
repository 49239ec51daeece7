# A VMA made read-only before its first fault loses VM_ACCOUNT and then no longer merges back.
# mprotect r of a private VMA without an anon_vma uncharges it (VM_ACCOUNT off). VM_ACCOUNT is
# not an access flag, so the read-only part cannot borrow its neighbour's anon_vma on its first
# fault; made writable again it is recharged but, with its own anon_vma, cannot merge: the
# aligned 2 MiB across the boundary gets a 4 KiB page.
mmap a 6M huge
mprotect a 3M 3M r
touch a 0 4K w
touch a 4M 4K r
mprotect a 3M 1M rw
touch a 2M 4K w
dump a
# Made read-only after a fault, a VMA keeps VM_ACCOUNT and shares its anon_vma with the part
# split from it, so the same steps merge it back and the aligned 2 MiB gets a THP.
mmap b 6M huge
touch b 0 4K w
mprotect b 3M 3M r
touch b 4M 4K r
mprotect b 3M 1M rw
touch b 2M 4K w
dump b
