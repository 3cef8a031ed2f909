#pragma once
// Streamed response bodies (Server-Sent Events over chunked transfer encoding) and client-disconnect notice.
// A handler that streams answers with a Response whose `stream` is set; it then appends chunks from any thread
// (the engine's, typically) and closes the stream; the connection writes chunks as the socket accepts them.
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>

namespace qed::http {

// Told when the client of an in-flight request goes away (socket closed or reset before the response was
// complete), so long work holding resources (a generation and its KV cache) can be aborted. Thread-safe.
class ClientWatch {
 public:
  // Runs `callback` once when the client disconnects; right away, on this thread, if it already has.
  void on_disconnect(std::function<void()> callback);
  bool disconnected() const;
  void notify_disconnected();  // the connection's side

 private:
  mutable std::mutex mutex_;
  bool disconnected_ = false;
  std::function<void()> callback_;
};

class ResponseStream {
 public:
  // A reader slower than the producer past this many buffered bytes is cut off (bounded memory per stream).
  explicit ResponseStream(size_t max_buffered_bytes = size_t(16) << 20) : max_buffered_(max_buffered_bytes) {}

  // Producer side, any thread. write() returns false (and drops the chunk) once the stream is cancelled.
  bool write(std::string chunk);
  void close();  // end of body; later writes are dropped
  bool cancelled() const;

  // Connection side. The waker runs on the producer's thread whenever there is something new to send.
  void set_waker(std::function<void()> waker);
  struct Taken {
    std::string data;
    bool closed = false;  // nothing more will come after `data`
  };
  Taken take();
  void cancel();  // the client is gone or too slow: drop everything from now on

 private:
  void wake(std::unique_lock<std::mutex>& lock);

  const size_t max_buffered_;
  mutable std::mutex mutex_;
  std::string pending_;
  bool closed_ = false;
  bool cancelled_ = false;
  std::function<void()> waker_;
};

}  // namespace qed::http
