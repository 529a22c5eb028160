import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The repository root (for `proto/`, which tshark reads to decode the control messages).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The lab's processes from its lab.json: name → (address, state dir).
func labProcesses(_ dir: String) throws -> [String: (address: String, stateDir: String)] {
  let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/lab.json"))
  let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
  var out: [String: (String, String)] = [:]
  for p in (object["processes"] as? [[String: Any]]) ?? [] {
    if let name = p["name"] as? String { out[name] = ((p["address"] as? String) ?? "", (p["stateDir"] as? String) ?? "") }
  }
  return out
}

func port(_ address: String) -> String { String(address.split(separator: ":").last ?? "") }

/// Runs a program other than hostnat to completion (bounded), capturing its output.
func runTool(_ path: String, _ arguments: [String], timeout: Duration = .seconds(60)) async throws -> ProcessResult {
  let process = Process()
  let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("hostnat-tool-\(UUID().uuidString)")
  try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
  defer { try? FileManager.default.removeItem(at: scratch) }
  let out = scratch.appendingPathComponent("out"), err = scratch.appendingPathComponent("err")
  _ = FileManager.default.createFile(atPath: out.path, contents: nil)
  _ = FileManager.default.createFile(atPath: err.path, contents: nil)
  process.executableURL = URL(fileURLWithPath: path)
  process.arguments = arguments
  process.standardOutput = try FileHandle(forWritingTo: out)
  process.standardError = try FileHandle(forWritingTo: err)
  process.standardInput = FileHandle.nullDevice
  let started = ContinuousClock.now
  try process.run()
  let deadline = started + timeout
  while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
  let timedOut = process.isRunning
  if timedOut { kill(process.processIdentifier, SIGKILL) }
  process.waitUntilExit()
  return ProcessResult(
    exitCode: process.terminationStatus, stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
    stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "", timedOut: timedOut, elapsed: ContinuousClock.now - started)
}

/// Control traces from a real lab, read back and replayed against a live agent.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct ControlTraceEndToEndTests {
  @Test func labTracesReadAndReplay() async throws {
    let dir = try TemporaryDirectory()
    let lab = dir.path + "/lab"
    let up = try await Hostnat.run(["lab", "up", "--dir", lab, "--trace-control"], timeout: .seconds(120))
    #expect(up.exitCode == 0, "\(up.stderr)")
    try await Task.sleep(for: .seconds(2))
    let down = try await Hostnat.run(["lab", "down", "--dir", lab], timeout: .seconds(60))
    #expect(down.exitCode == 0, "\(down.stderr)")

    // What each side wrote.
    let agentTrace = lab + "/agents/host-1/control-trace.jsonl"
    let shown = try await Hostnat.run(["trace", "show", agentTrace])
    #expect(shown.exitCode == 0, "\(shown.stderr)")
    let lines = shown.stdout.split(separator: "\n").map(String.init)
    #expect(lines.first?.hasPrefix("control trace written by agent host-1: ") == true, "\(shown.stdout)")
    let hello = try #require(lines.firstIndex { $0.contains("host-1  -> hello host-1 boot ") && $0.contains(" holds v0") }, "\(shown.stdout)")
    let push = try #require(lines.firstIndex { $0.contains("host-1 <-  push v") && $0.contains("2 VM(s), 1 gateway(s)") }, "\(shown.stdout)")
    let ack = try #require(lines.firstIndex { $0.contains("host-1  -> ack v") }, "\(shown.stdout)")
    #expect(hello < push && push < ack)
    #expect(lines.contains { $0.contains("heartbeat(s))") })

    let controllerTrace = lab + "/controller/control-trace.jsonl"
    let all = try await Hostnat.run(["trace", "show", controllerTrace, "--format", "mermaid"])
    #expect(all.exitCode == 0, "\(all.stderr)")
    for host in ["host-1", "host-2", "host-3", "edge"] {
      #expect(all.stdout.contains(" as \(host)\n"), "\(host) missing: \(all.stdout)")
    }
    #expect(all.stdout.hasPrefix("sequenceDiagram\n"))
    #expect(all.stdout.contains("C->>H") && all.stdout.contains(": push v") && all.stdout.contains(": ack v"))
    let json = try await Hostnat.run(["trace", "show", controllerTrace, "--format", "json", "--peer", "host-2"])
    let records = json.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    #expect(!records.isEmpty)
    #expect(records.allSatisfy { $0["peer"] as? String == "host-2" && $0["side"] as? String == "controller" })
    #expect(records.contains { $0["type"] as? String == "push" && ($0["message"] as? [String: Any])?["push"] != nil })

    // Replayed to a fresh agent: it ACKs what host-1 ACKed.
    let listen = "127.0.0.1:\(try Hostnat.freeLoopbackPort())"
    let replay = try BackgroundProcess(["trace", "replay", agentTrace, "--agent", "host-1", "--listen", listen, "--json", "--connect-timeout", "30"])
    _ = try await replay.waitForLine(prefix: "replay listening on \(listen)", timeout: .seconds(30))
    let agent = try BackgroundProcess([
      "agent", "--host-id", "host-1", "--controller", listen, "--underlay", "127.0.0.1:0", "--state-dir", dir.path + "/replayed-agent",
    ])
    let code = await replay.waitForExit(timeout: .seconds(40))
    #expect(code == 0, "stdout: \(replay.stdout) stderr: \(replay.stderr)")
    let reportText = replay.stdout.split(separator: "\n", maxSplits: 1).dropFirst().joined()
    let report = try #require(try JSONSerialization.jsonObject(with: Data(reportText.utf8)) as? [String: Any], "\(replay.stdout)")
    #expect(report["ok"] as? Bool == true)
    #expect((report["same"] as? Int ?? 0) >= 1)
    #expect(report["different"] as? Int == 0)
    #expect(report["heldVersion"] as? Int == 0)
    let steps = (report["steps"] as? [[String: Any]]) ?? []
    #expect(steps.allSatisfy { $0["recorded"] as? String == "ack" && $0["replayed"] as? String == "ack" }, "\(steps)")
    let applied = try #require(steps.last?["sentVersion"] as? Int)
    let status = try await waitForStatus(dir.path + "/replayed-agent/status.json") { ($0["control"] as? [String: Any])?["appliedVersion"] as? Int == applied }
    #expect(status, "the replayed agent did not apply v\(applied)")

    // Again, rebased: the agent now holds the recorded versions, so each is shifted above them.
    let rebased = try BackgroundProcess(["trace", "replay", agentTrace, "--agent", "host-1", "--listen", listen, "--connect-timeout", "30"])
    let rebasedCode = await rebased.waitForExit(timeout: .seconds(40))
    #expect(rebasedCode == 0, "stdout: \(rebased.stdout) stderr: \(rebased.stderr)")
    #expect(rebased.stdout.contains("held v\(applied); replaying host-1's exchange, versions shifted by +"), "\(rebased.stdout)")

    // The same exchange with its recorded versions, to an agent that now holds a newer one:
    // every push is stale, and the replay says the agent answered differently (exit 1).
    let stale = try BackgroundProcess(["trace", "replay", agentTrace, "--agent", "host-1", "--listen", listen, "--versions", "recorded", "--connect-timeout", "30"])
    let staleCode = await stale.waitForExit(timeout: .seconds(40))
    #expect(staleCode == 1, "stdout: \(stale.stdout) stderr: \(stale.stderr)")
    #expect(stale.stdout.contains("DIFFERENT") && stale.stdout.contains("replayed nack: stale epoch"), "\(stale.stdout)")
    agent.signal(SIGTERM)
    _ = await agent.waitForExit(timeout: .seconds(10))

    // Bad input: a clear reason, exit 2.
    let unknown = try await Hostnat.run(["trace", "replay", controllerTrace, "--agent", "host-9", "--listen", "127.0.0.1:0"])
    #expect(unknown.exitCode == 2)
    #expect(unknown.stderr.contains("several hosts") && unknown.stderr.contains("--from"), "\(unknown.stderr)")
    let bad = dir.path + "/bad.jsonl"
    try "{\"ms\":1}\n".write(toFile: bad, atomically: true, encoding: .utf8)
    let broken = try await Hostnat.run(["trace", "show", bad])
    #expect(broken.exitCode == 2)
    #expect(broken.stderr.contains("bad.jsonl:1: "), "\(broken.stderr)")
  }

  func waitForStatus(_ path: String, _ condition: ([String: Any]) -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline {
      if let data = FileManager.default.contents(atPath: path),
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any], condition(object)
      {
        return true
      }
      try await Task.sleep(for: .milliseconds(100))
    }
    return false
  }
}

/// Whether tshark can capture here: it is installed and we may capture on loopback.
let tsharkCapture: (ok: Bool, why: String) = {
  guard FileManager.default.isExecutableFile(atPath: "/usr/bin/tshark") else {
    return (false, "tshark is not installed (.ci/run installs Debian's tshark)")
  }
  guard getuid() == 0 else { return (false, "capturing on lo needs root (CI runs as root)") }
  return (true, "")
}()

/// Both planes as tshark sees them: Geneve with inner IPv4 on the data plane, gRPC over HTTP/2
/// with hostnat's messages on the control plane.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct TsharkDecodeTests {
  @Test(.enabled(if: tsharkCapture.ok, Comment(rawValue: tsharkCapture.why)))
  func tsharkDecodesBothPlanes() async throws {
    let dir = try TemporaryDirectory()
    let lab = dir.path + "/lab"
    let capture = dir.path + "/lab.pcapng"
    // Bounded three ways: time, packets and file size.
    let tsharkErr = dir.url.appendingPathComponent("tshark.err")
    let tshark = try spawnWithDefaultSignals("/usr/bin/tshark", [
      "-q", "-i", "lo", "-f", "ip host 127.0.0.1", "-a", "duration:90", "-a", "filesize:200000", "-c", "200000", "-w", capture,
    ], stderr: tsharkErr.path)
    defer { if tshark.isRunning { kill(tshark.pid, SIGKILL); tshark.reap() } }
    // tshark says so once it captures.
    let ready = ContinuousClock.now + .seconds(20)
    while !((try? String(contentsOf: tsharkErr, encoding: .utf8)) ?? "").contains("Capturing on"), ContinuousClock.now < ready, tshark.isRunning {
      try await Task.sleep(for: .milliseconds(50))
    }
    #expect(tshark.isRunning, "tshark: \((try? String(contentsOf: tsharkErr, encoding: .utf8)) ?? "")")

    let up = try await Hostnat.run(["lab", "up", "--dir", lab], timeout: .seconds(120))
    #expect(up.exitCode == 0, "\(up.stderr)")
    try await Task.sleep(for: .seconds(2))
    let processes = try labProcesses(lab)
    _ = try await Hostnat.run(["lab", "down", "--dir", lab], timeout: .seconds(60))
    kill(tshark.pid, SIGTERM)
    let stopped = ContinuousClock.now + .seconds(15)
    while tshark.isRunning && ContinuousClock.now < stopped { try await Task.sleep(for: .milliseconds(50)) }
    #expect(!tshark.isRunning, "tshark did not stop on SIGTERM")

    // Data plane: the edge's and an agent's underlay ports decoded as Geneve.
    let edge = try #require(processes["edge"]).address
    let agent = try #require(processes["agent/host-1"]).address
    let geneve = try await runTool("/usr/bin/tshark", [
      "-r", capture, "-d", "udp.port==\(port(edge)),geneve", "-d", "udp.port==\(port(agent)),geneve",
      "-Y", "geneve", "-T", "fields", "-E", "separator=|", "-e", "geneve.vni", "-e", "ip.src", "-e", "ip.dst",
    ])
    #expect(geneve.exitCode == 0, "\(geneve.stderr)")
    let rows = Set(geneve.stdout.split(separator: "\n").map(String.init))
    // The outer header is loopback; the inner one carries the VM, NAT and server addresses.
    // VNI 1: a VM (10.x) to a server on 192.0.2.0/24; VNI 2: the NAT IP (203.0.113.x) to it, and back.
    #expect(rows.contains { $0.hasPrefix("0x000001|127.0.0.1,10.") && $0.contains("|127.0.0.1,192.0.2.") }, "\(rows.prefix(20))")
    #expect(rows.contains { $0.hasPrefix("0x000002|127.0.0.1,203.0.113.") && $0.contains("|127.0.0.1,192.0.2.") }, "\(rows.prefix(20))")
    #expect(rows.contains { $0.hasPrefix("0x000002|127.0.0.1,192.0.2.") && $0.contains("|127.0.0.1,203.0.113.") }, "\(rows.prefix(20))")

    // Control plane: host-1's control connection (through its proxy) as gRPC over HTTP/2, the
    // messages decoded from proto/ by tshark's protobuf dissector.
    let proxy = try #require(processes["proxy/host-1"]).address
    let grpc = try await runTool("/usr/bin/tshark", [
      "-r", capture, "-d", "tcp.port==\(port(proxy)),http2",
      "-o", "uat:protobuf_search_paths:\"\(repositoryRoot.path)/proto\",\"TRUE\"", "-Y", "grpc", "-V",
    ])
    #expect(grpc.exitCode == 0, "\(grpc.stderr)")
    #expect(grpc.stdout.contains("GRPC Message: /hostnat.v1.HostControlService/Connect, Request"))
    #expect(grpc.stdout.contains("Message: hostnat.v1.Hello"))
    #expect(grpc.stdout.contains("host_id = host-1 (string)"))
    #expect(grpc.stdout.contains("Message: hostnat.v1.ConfigPush"))
    #expect(grpc.stdout.contains("Message: hostnat.v1.Ack"))
  }
}

/// A child process started with the default disposition and an empty mask for every signal.
/// Foundation's Process passes on the test runner's blocked signals, and a tshark that cannot
/// see SIGTERM never stops capturing.
final class SpawnedProcess: @unchecked Sendable {
  let pid: pid_t
  private var status: Int32?
  init(pid: pid_t) { self.pid = pid }

  var isRunning: Bool {
    if status != nil { return false }
    var s: Int32 = 0
    if waitpid(pid, &s, WNOHANG) == pid { status = s }
    return status == nil
  }

  func reap() {
    var s: Int32 = 0
    if status == nil, waitpid(pid, &s, 0) == pid { status = s }
  }
}

func spawnWithDefaultSignals(_ path: String, _ arguments: [String], stderr: String) throws -> SpawnedProcess {
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
  posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
  var attributes = posix_spawnattr_t()
  posix_spawnattr_init(&attributes)
  defer { posix_spawnattr_destroy(&attributes) }
  var empty = sigset_t()
  sigemptyset(&empty)
  var all = sigset_t()
  sigfillset(&all)
  posix_spawnattr_setsigmask(&attributes, &empty)
  posix_spawnattr_setsigdefault(&attributes, &all)
  posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
  let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
  defer { for p in argv { free(p) } }
  var pid: pid_t = 0
  let rc = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
  guard rc == 0 else { throw SupportError.exited(rc, "posix_spawn \(path)") }
  return SpawnedProcess(pid: pid)
}
