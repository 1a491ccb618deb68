/* Test frame layout shared by the xsk tests' C++ side and their XDP program. */
#pragma once

/* IEEE 802 local experimental EtherType: nothing else in a lab uses it. */
#define XVIO_XSK_TEST_ETHERTYPE 0x88B5
