// The Linux calls larder-bench's load generator waits with, which Swift's
// Glibc module does not export: epoll for readiness, a timerfd for pacing.
#pragma once
#include <sys/epoll.h>
#include <sys/timerfd.h>
