// A tiny thread pool for kernels that must stay fast on a shared, oversubscribed CPU.
//
// Why not OpenMP: a parallel region ends at a barrier every team thread must reach, so when the
// machine is busy and a helper thread is not scheduled, the caller waits for a whole scheduler
// time slice (measured here: a 0.3 ms GEMV took 16 ms with two OpenMP threads under load).
// Here work is split into chunks that threads *claim*; the calling thread claims chunks too and
// only waits for chunks another thread has already started. A helper that wakes up late finds
// nothing left and goes back to sleep; the caller never waits for it.
//
// Threads: one per CPU this process may run on (sched_getaffinity), minus the caller;
// GSCORE_KERNEL_THREADS overrides the total (1 = no helpers). The library is linked with
// -z nodelete, so it is never unmapped under the sleeping helpers.
//
// While jobs come in a burst (the last one began less than kSpinMicros after the one before
// ended), a helper that finished a job waits for the next by yielding in a loop for up to
// kSpinMicros before it sleeps (GSCORE_KERNEL_SPIN_US overrides; 0 = always sleep at once).
// The kernels of a quantized decode step come tens of microseconds apart, less than a sleeping
// thread takes to wake: a helper that slept after every job joined each next one late and the
// caller streamed most of the weights alone. Where our jobs are sparse (a float network whose
// MatMuls run on MindSpore's own threads between them), the helper sleeps at once and leaves
// those threads the core.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace gsk {

constexpr int64_t kSpinMicros = 300;

inline int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

class Pool {
 public:
  static Pool& instance() {
    static Pool* pool = new Pool();  // never destroyed: helpers sleep until the process exits
    return *pool;
  }

  int threads() const { return static_cast<int>(helpers_.size()) + 1; }

  // Runs body(i) for every i in [0, chunks), each exactly once, on this thread and the helpers.
  void run(int64_t chunks, std::function<void(int64_t)> body) {
    if (chunks <= 0) return;
    std::unique_lock<std::mutex> serial(serial_, std::try_to_lock);
    if (chunks == 1 || helpers_.empty() || !serial.owns_lock()) {  // busy pool: do it alone
      for (int64_t i = 0; i < chunks; ++i) body(i);
      return;
    }
    const int64_t start = now_us();
    gap_us_.store(start - last_end_us_, std::memory_order_relaxed);
    auto job = std::make_shared<Job>();
    job->body = std::move(body);
    job->total = chunks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      current_ = job;
      ++generation_;
    }
    wake_.notify_all();
    drain(*job);
    for (int spins = 0; job->done.load(std::memory_order_acquire) < chunks; ++spins) {
      if (spins > 2000) std::this_thread::yield();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (current_ == job) current_.reset();
    last_end_us_ = now_us();
  }

 private:
  struct Job {
    std::function<void(int64_t)> body;
    int64_t total = 0;
    std::atomic<int64_t> next{0}, done{0};
  };

  Pool() {
    int total = 0;
    if (const char* env = std::getenv("GSCORE_KERNEL_THREADS")) total = std::atoi(env);
    if (const char* env = std::getenv("GSCORE_KERNEL_SPIN_US")) spin_us_ = std::max(0, std::atoi(env));
    if (total <= 0) {
      cpu_set_t set;
      total = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : static_cast<int>(std::thread::hardware_concurrency());
    }
    for (int i = 1; i < total; ++i) helpers_.emplace_back([this] { serve(); });
    for (auto& t : helpers_) t.detach();
  }

  // Claims and runs chunks until none is left. A chunk is only claimed while the caller still
  // waits for `done`, so body is never called after run() returned.
  static void drain(Job& job) {
    for (;;) {
      const int64_t i = job.next.fetch_add(1, std::memory_order_acq_rel);
      if (i >= job.total) return;
      job.body(i);
      job.done.fetch_add(1, std::memory_order_release);
    }
  }

  void serve() {
    uint64_t seen = 0;
    for (;;) {
      if (gap_us_.load(std::memory_order_relaxed) < spin_us_) {
        const int64_t until = now_us() + spin_us_;
        while (generation_.load(std::memory_order_acquire) == seen && now_us() < until) std::this_thread::yield();
      }
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        seen = generation_.load(std::memory_order_relaxed);
        job = current_;
      }
      if (job) drain(*job);
    }
  }

  std::vector<std::thread> helpers_;
  std::mutex serial_;  // one job at a time; a second caller runs its work alone
  std::mutex mutex_;
  std::condition_variable wake_;
  std::shared_ptr<Job> current_;
  std::atomic<uint64_t> generation_{0};
  int64_t spin_us_ = kSpinMicros;
  int64_t last_end_us_ = 0;  // when the last job ended (written under serial_)
  std::atomic<int64_t> gap_us_{0};  // idle time before the last job began
};

// fn(begin, end) over [0, n) in chunks of about `grain` items (fewer, larger chunks when n is
// small relative to the threads); work below `min_work` multiply-adds runs on the caller alone.
template <class F>
void parallel_for(int64_t n, int64_t grain, int64_t work, F&& fn) {
  constexpr int64_t kMinWork = 1 << 16;
  if (n <= 0) return;
  if (work < kMinWork || n <= grain) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t chunks = (n + grain - 1) / grain;
  // The chunk body captures one pointer, so std::function keeps it inline (no heap allocation
  // per job: a decode step runs a few hundred jobs).
  struct Range {
    std::remove_reference_t<F>* fn;
    int64_t n, grain;
  } range{&fn, n, grain};
  Pool::instance().run(chunks, [r = &range](int64_t c) { (*r->fn)(c * r->grain, std::min(r->n, (c + 1) * r->grain)); });
}

}  // namespace gsk
