// The job secret (job_secret.h): the HMAC against a known answer (Python's hmac module), the
// AUTH_* requests on the wire, what a trusted (loopback, same uid) connection is told, and the
// probation rules on connections served as if from another host (socketpairs). A real peer on
// another host: tests/launcher/test_kubeflow_env.py, between network-namespace hosts with real
// agents, PyTorch workers and a PyTorch stranger.
#include "job_secret.h"

#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>
#include <cctype>
#include <optional>
#include <thread>

#include "gpurun/common/error.h"
#include "gpurun/rendezvous/job_access.h"
#include "gpurun/rendezvous/store_server.h"
#include "gpurun/rendezvous/tcp_store.h"
#include "protocol.h"
#include "test_util.h"

using namespace gpurun::rendezvous;
using namespace gpurun::rendezvous::testing;

namespace {

std::string hex(std::string_view raw) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string nonce_0_to_31() {
  std::string n(32, '\0');
  for (int i = 0; i < 32; ++i) n[static_cast<std::size_t>(i)] = static_cast<char>(i);
  return n;
}

}  // namespace

TEST_CASE("job secret: the proof is HMAC-SHA256(secret, context || nonce)", "[auth]") {
  // python3 -c "import hmac,hashlib; print(hmac.new(b'job-secret',
  //   b'gpurun-store-auth-v1' + bytes(range(32)), hashlib.sha256).hexdigest())"
  CHECK(hex(auth::proof("job-secret", nonce_0_to_31())) ==
        "5faf94793fb7c3ff23bbcbfab521ab6e20fa10d8c838390497541dde4f54643a");
  const std::string good = auth::proof("job-secret", nonce_0_to_31());
  CHECK(auth::proof_matches("job-secret", nonce_0_to_31(), good));
  CHECK_FALSE(auth::proof_matches("job-secreT", nonce_0_to_31(), good));
  CHECK_FALSE(auth::proof_matches("job-secret", auth::make_nonce(), good));
  CHECK_FALSE(auth::proof_matches("job-secret", nonce_0_to_31(), good.substr(0, 31)));
  CHECK_FALSE(auth::proof_matches("job-secret", nonce_0_to_31(), ""));
}

TEST_CASE("job secret: nonces and generated secrets are fresh", "[auth]") {
  const std::string a = auth::make_nonce(), b = auth::make_nonce();
  CHECK(a.size() == auth::kNonceBytes);
  CHECK(a != b);
  const std::string s = generate_job_secret();
  CHECK(s.size() == 64);
  for (char c : s) CHECK(std::isxdigit(static_cast<unsigned char>(c)));
  CHECK(s != generate_job_secret());
}

TEST_CASE("job secret: AUTH_* are gpurun's 2.x requests, absent from 1.13", "[auth][protocol]") {
  std::vector<std::uint8_t> out;
  protocol::encode_auth_challenge(Dialect::kV2, out);
  CHECK(out == std::vector<std::uint8_t>{0xA0});
  out.clear();
  protocol::encode_auth_proof(Dialect::kV2, "pq", out);
  CHECK(out == std::vector<std::uint8_t>{0xA1, 2, 0, 0, 0, 0, 0, 0, 0, 'p', 'q'});
  CHECK_THROWS_AS(protocol::encode_auth_challenge(Dialect::kV113, out), gpurun::ProtocolError);

  protocol::RequestParser p({}, Dialect::kV2);
  protocol::Request r;
  REQUIRE(p.parse(out, r) == protocol::ParseStatus::kRequest);
  CHECK(r.op == protocol::Op::kAuthProof);
  CHECK(r.key == "pq");
  CHECK(std::string(protocol::op_name(protocol::Op::kAuthChallenge)) == "AUTH_CHALLENGE");

  protocol::RequestParser old({}, Dialect::kV113);
  const std::vector<std::uint8_t> a0{0xA0};
  CHECK(old.parse(a0, r) == protocol::ParseStatus::kError);
  CHECK_THAT(old.error(), Catch::Contains("unknown query type 0xa0"));
}

TEST_CASE("job secret: a trusted connection is told no proof is needed", "[auth][server]") {
  StoreServerOptions o = test_server_options();
  o.job_secret = "s3cret";
  StoreServerThread srv(o);
  RawClient c(srv.port());
  c.send(v2_validate());
  c.send({0xA0});  // AUTH_CHALLENGE from loopback, same uid: trusted already
  CHECK(c.recv_bytes().empty());
  c.send(cat({{0xA1}, wstr("anything")}));  // a proof is not even checked
  CHECK(c.recv(1) == Buf{0x00});
  c.send(set2("k", "v"));
  c.send(get2("k"));
  CHECK(c.recv_bytes() == "v");
}

TEST_CASE("job secret: gpurun's client proves it only when asked", "[auth][client]") {
  StoreServerOptions o = test_server_options();
  o.job_secret = "s3cret";
  StoreServerThread with_secret(o);
  StoreServerThread without(test_server_options());
  for (auto* srv : {&with_secret, &without}) {
    for (const char* secret : {"s3cret", "other", ""}) {
      TcpStoreOptions to;
      to.port = srv->port();
      to.job_secret = secret;
      TcpStore c(to);
      c.set("k", std::string_view("v"));
      CHECK(to_string(c.get("k")) == "v");
    }
  }
}

namespace {

// A store with secret "s3cret" on its own thread, serving socketpairs as peers on probation.
struct ProbationServer {
  boost::asio::io_context io;
  std::optional<StoreServer> srv;
  std::vector<RawClient> peers;
  std::thread loop;

  explicit ProbationServer(int n,
                           std::chrono::milliseconds auth_timeout = std::chrono::seconds(10)) {
    StoreServerOptions o = test_server_options();
    o.job_secret = "s3cret";
    o.auth_timeout = auth_timeout;
    srv.emplace(io, o);
    for (int i = 0; i < n; ++i) {
      int sv[2];
      REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
      srv->serve_connected(sv[0], /*on_probation=*/true);
      peers.emplace_back(gpurun::UniqueFd(sv[1]));
    }
    loop = std::thread([this] { io.run(); });
  }
  ~ProbationServer() {
    boost::asio::post(io, [this] { srv->stop(); });
    loop.join();
  }
};

}  // namespace

TEST_CASE("job secret: a peer on probation may only prove it", "[auth][server]") {
  ProbationServer s(4);
  // 0: proves the secret, then uses the store like anyone.
  RawClient& good = s.peers[0];
  good.send(v2_validate());
  good.send({0xA0});
  const std::string nonce = good.recv_bytes();
  REQUIRE(nonce.size() == auth::kNonceBytes);
  good.send(cat({{0xA1}, wstr(auth::proof("s3cret", nonce))}));
  CHECK(good.recv(1) == Buf{0x00});
  good.send(set2("k", "v"));
  good.send(get2("k"));
  CHECK(good.recv_bytes() == "v");
  // 1: a data request before any proof closes it, unanswered; the key is not touched.
  RawClient& eager = s.peers[1];
  eager.send(v2_validate());
  eager.send(set2("k", "stranger"));
  CHECK(eager.closed_within());
  good.send(get2("k"));
  CHECK(good.recv_bytes() == "v");
  // 2: a wrong proof closes it.
  RawClient& wrong = s.peers[2];
  wrong.send(v2_validate());
  wrong.send({0xA0});
  const std::string n2 = wrong.recv_bytes();
  CHECK(n2 != nonce);  // fresh per connection: a recorded proof is worthless
  wrong.send(cat({{0xA1}, wstr(auth::proof("s3cret", nonce))}));  // 0's proof, replayed
  CHECK(wrong.closed_within());
  // 3: PING is allowed on probation; a proof without a challenge closes it.
  RawClient& nochal = s.peers[3];
  nochal.send(v2_validate());
  nochal.send(cat({{0x0D}, {7, 0, 0, 0}}));
  CHECK(nochal.recv(4) == Buf{7, 0, 0, 0});
  nochal.send(cat({{0xA1}, wstr(std::string(32, 'x'))}));
  CHECK(nochal.closed_within());
}

TEST_CASE("job secret: a peer on probation that proves nothing is closed at the deadline",
          "[auth][server]") {
  ProbationServer s(1, std::chrono::milliseconds(300));
  s.peers[0].send(v2_validate());
  CHECK(s.peers[0].closed_within(std::chrono::seconds(10)));  // the 250 ms sweep closes it
}

TEST_CASE("job access: the dry run's one-line summary, from the same sources in the same order",
          "[auth][access]") {
  const gpurun::EnvMap none;
  CHECK(describe_job_access(none, std::nullopt, true, true) ==
        "this host: only this uid; other hosts: none (the store is bound to a loopback address)");
  CHECK(describe_job_access(none, std::nullopt, false, false) ==
        "this host: only this uid; other hosts: any (no --rdzv-allow, Slurm node list or "
        "GPURUN_JOB_SECRET: set one to keep other hosts out)");
  CHECK_THAT(describe_job_access(none, std::nullopt, true, false),
             Catch::EndsWith("only hosts that prove the job secret gpurun generates for this "
                             "run (its workers get it)"));
  const gpurun::EnvMap secret{{"GPURUN_JOB_SECRET", "s"}, {"GPURUN_STORE_CHECK_PEER_UID", "0"}};
  CHECK(describe_job_access(secret, std::nullopt, false, false) ==
        "this host: any uid (GPURUN_STORE_CHECK_PEER_UID=0); other hosts: only hosts whose "
        "gpurun proves GPURUN_JOB_SECRET (then their workers too)");
  // The flag wins over GPURUN_STORE_ALLOW, which wins over Slurm's node list.
  const gpurun::EnvMap all{{"GPURUN_STORE_ALLOW", "10.0.0.0/8"}, {"SLURM_JOB_NODELIST", "n[1-2]"}};
  CHECK_THAT(describe_job_access(all, std::string("a,b"), false, false),
             Catch::EndsWith("other hosts: only a,b (--rdzv-allow)"));
  CHECK_THAT(describe_job_access(all, std::nullopt, false, false),
             Catch::EndsWith("other hosts: only 10.0.0.0/8 (GPURUN_STORE_ALLOW)"));
  const gpurun::EnvMap slurm{{"SLURM_JOB_NODELIST", "n[1-2]"}, {"GPURUN_JOB_SECRET", "s"}};
  CHECK_THAT(describe_job_access(slurm, std::nullopt, false, false),
             Catch::EndsWith("other hosts: only the Slurm job's nodes (SLURM_JOB_NODELIST=n[1-2]), "
                             "and hosts whose gpurun proves GPURUN_JOB_SECRET (then their workers "
                             "too)"));
}
