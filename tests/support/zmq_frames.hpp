// Multipart messages on raw ZeroMQ sockets, for the test stand-ins (raw clients, scripted
// brokers) that must send and receive anything, well-formed or not.
#pragma once

#include <zmq.h>

#include <string>
#include <vector>

namespace plh::test {

// Every frame of the next message on `sock` (blocking); what arrived before a failed
// receive, or nothing.
inline std::vector<std::string> recv_frames(void* sock) {
  std::vector<std::string> frames;
  for (int more = 1; more;) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, 0) < 0) {
      zmq_msg_close(&m);
      break;
    }
    frames.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
    more = zmq_msg_more(&m);
    zmq_msg_close(&m);
  }
  return frames;
}

// Sends `frames` as one message.
inline void send_frames(void* sock, const std::vector<std::string>& frames) {
  for (std::size_t i = 0; i < frames.size(); ++i)
    zmq_send(sock, frames[i].data(), frames[i].size(), i + 1 < frames.size() ? ZMQ_SNDMORE : 0);
}

}  // namespace plh::test
