import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Whether namespaces mode can run here, and if not why (CI runs as root with the tools
/// `.ci/run` installs).
let netnsLab: (ok: Bool, why: String) = {
  guard getuid() == 0 else { return (false, "namespaces mode needs root (CI runs as root)") }
  guard access("/dev/net/tun", R_OK | W_OK) == 0 else { return (false, "no /dev/net/tun") }
  for tool in ["/usr/bin/ip", "/usr/bin/ping", "/usr/bin/socat", "/usr/bin/turnserver", "/usr/bin/turnutils_natdiscovery"]
  where access(tool, X_OK) != 0 && access(tool.replacingOccurrences(of: "/usr/bin", with: "/bin"), X_OK) != 0 {
    return (false, "\(tool) is missing (.ci/run installs iproute2, iputils-ping, socat and coturn)")
  }
  return (true, "")
}()

/// `hostnat lab down` run to completion before returning: a defer cannot await, and a Task
/// started there may never run before the test process ends, leaving a lab behind.
func labDownNow(_ lab: String) {
  guard let process = try? BackgroundProcess(["lab", "down", "--dir", lab]) else { return }
  let deadline = Date().addingTimeInterval(60)
  while process.isRunning && Date() < deadline { usleep(20_000) }
}

/// Real programs behind hostnat: `lab up --netns`, the kernels' own TCP/UDP/ICMP through it,
/// RFC 5780 behaviour discovery with coturn's client and server, and clean-up.
@Suite(.serialized, .timeLimit(.minutes(10)), .enabled(if: netnsLab.ok, Comment(rawValue: netnsLab.why)))
struct NetnsLabTests {
  func exec(_ lab: String, _ target: String, _ command: [String], timeout: Duration = .seconds(30)) async throws -> ProcessResult {
    try await Hostnat.run(["lab", "exec", "--dir", lab, target, "--"] + command, timeout: timeout)
  }

  /// Waits (bounded) until servers in the Internet namespace listen on every PROTO:PORT given.
  func waitForListeners(_ lab: String, _ wanted: [String]) async throws {
    let deadline = ContinuousClock.now + .seconds(20)
    var missing = wanted
    while ContinuousClock.now < deadline {
      let tcp = try await exec(lab, "internet", ["ss", "-Htln"]).stdout
      let udp = try await exec(lab, "internet", ["ss", "-Huln"]).stdout
      missing = wanted.filter { item in
        let parts = item.split(separator: ":")
        return !(parts[0] == "tcp" ? tcp : udp).contains(":\(parts[1]) ")
      }
      if missing.isEmpty { return }
      try await Task.sleep(for: .milliseconds(200))
    }
    Issue.record("servers not listening after 20 s: \(missing)")
  }

  func namespaces() -> [String] {
    ((try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? "").split(separator: "\n")
      .compactMap { line -> String? in
        let fields = line.split(separator: " ")
        guard fields.count > 1, fields[1].hasPrefix("/run/netns/") else { return nil }
        return String(fields[1].dropFirst("/run/netns/".count))
      }
  }

  func engineCounters(_ statusFile: String) throws -> (flowsCreated: Int, filteredInbound: Int) {
    let data = try Data(contentsOf: URL(fileURLWithPath: statusFile))
    let status = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let global = try #require((status["dataplane"] as? [String: Any])?["global"] as? [String: Any])
    return (global["flowsCreated"] as? Int ?? -1, global["filteredInbound"] as? Int ?? -1)
  }

  @Test func realProgramsBehindTheNat() async throws {
    let dir = try TemporaryDirectory()
    let lab = dir.path + "/lab"
    let before = Set(namespaces())
    let up = try await Hostnat.run(["lab", "up", "--netns", "--dir", lab], timeout: .seconds(120))
    #expect(up.exitCode == 0, "\(up.stderr)")
    // A failed expectation must not leave namespaces behind: down again (harmless when down).
    defer { labDownNow(lab) }
    // Other suites make namespaces of their own meanwhile: count the lab's by their roles.
    let mine = Set(namespaces()).subtracting(before).filter { $0.hasSuffix("-internet") || $0.contains("-vm-vm-") }
    #expect(mine.count == 7, "\(mine.sorted())")  // six VMs and the Internet
    #expect(up.stdout.contains("namespaces   6 VM(s) and the Internet"), "\(up.stdout)")

    // ICMP: the VM's kernel pings a public address in the Internet namespace.
    // Every check that rides on single datagrams tries up to three times: the whole suite runs
    // beside this lab on two cores (a bench floods UDP meanwhile), and a lost datagram is not
    // what these checks are about.
    var ping = try await exec(lab, "vm/vm-1", ["ping", "-c", "3", "-W", "2", "192.0.2.100"])
    for _ in 0..<2 where !ping.stdout.contains("3 received") {
      ping = try await exec(lab, "vm/vm-1", ["ping", "-c", "3", "-W", "2", "192.0.2.100"])
    }
    #expect(ping.exitCode == 0 && ping.stdout.contains("3 received"), "\(ping.stdout) \(ping.stderr)")

    // TCP and UDP: real servers in the Internet namespace see the VM's NAT IP (vm-1: 203.0.113.1).
    let servers = [
      ["socat", "TCP-LISTEN:8080,bind=192.0.2.100,reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERADDR"],
      ["socat", "UDP-RECVFROM:5353,bind=192.0.2.100,fork", "SYSTEM:echo $SOCAT_PEERADDR"],
      ["socat", "UDP-RECVFROM:5354,bind=192.0.2.100,fork", "SYSTEM:head -c 1450 /dev/zero"],
      ["turnserver", "-n", "--listening-ip", "192.0.2.101", "--listening-ip", "192.0.2.102", "--listening-port", "3478",
       "--alt-listening-port", "3479", "--no-tcp", "--no-tls", "--no-dtls", "--stun-only", "--no-cli", "--log-file", "stdout",
       "--userdb", dir.path + "/turndb", "--pidfile", dir.path + "/turn.pid"],
    ]
    // Each server lives at most 60 s; the lab going down ends them anyway (their namespace goes).
    var background: [BackgroundProcess] = []
    for server in servers {
      background.append(try BackgroundProcess(["lab", "exec", "--dir", lab, "internet", "--", "timeout", "60"] + server))
    }
    try await waitForListeners(lab, ["tcp:8080", "udp:5353", "udp:5354", "udp:3478"])
    let tcp = try await exec(lab, "vm/vm-1", ["socat", "-T", "3", "-", "TCP:192.0.2.100:8080,connect-timeout=3"])
    #expect(tcp.exitCode == 0 && tcp.stdout.hasPrefix("203.0.113."), "tcp: \(tcp.stdout) \(tcp.stderr)")
    // UDP is a datagram: like any real client, ask again when no answer comes (the suite runs
    // many labs at once on two cores).
    // (The server forks a shell per datagram: on a loaded machine an answer can take seconds.)
    var udp = try await exec(lab, "vm/vm-1", ["sh", "-c", "echo hello | socat -T 3 - UDP:192.0.2.100:5353"])
    for _ in 0..<7 where udp.stdout.isEmpty {
      udp = try await exec(lab, "vm/vm-1", ["sh", "-c", "echo hello | socat -T 3 - UDP:192.0.2.100:5353"])
    }
    #expect(udp.exitCode == 0 && udp.stdout.hasPrefix("203.0.113."), "udp: \(udp.stdout) \(udp.stderr)")
    #expect(tcp.stdout == udp.stdout, "one NAT IP for TCP and UDP of one VM")

    // Path MTU: the VM's interface leaves room for the encapsulation, and a 1478-byte DF reply
    // towards it is answered with fragmentation-needed, which the server's kernel learns from.
    let mtu = try await exec(lab, "vm/vm-1", ["ip", "-o", "link", "show", "hostnat0"])
    #expect(mtu.stdout.contains("mtu 1400"), "\(mtu.stdout)")
    var fits = try await exec(lab, "vm/vm-1", ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1372", "192.0.2.100"])
    for _ in 0..<2 where fits.exitCode != 0 {
      fits = try await exec(lab, "vm/vm-1", ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1372", "192.0.2.100"])
    }
    #expect(fits.exitCode == 0, "\(fits.stdout) \(fits.stderr)")
    let tooBig = try await exec(lab, "vm/vm-1", ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1373", "192.0.2.100"])
    #expect(tooBig.exitCode != 0)
    var learned = ProcessResult(exitCode: -1, stdout: "", stderr: "", timedOut: false, elapsed: .zero)
    for _ in 0..<3 where !learned.stdout.contains("mtu 1400") {
      _ = try await exec(lab, "vm/vm-1", ["sh", "-c", "echo big | socat -T 2 - UDP:192.0.2.100:5354"])
      learned = try await exec(lab, "internet", ["ip", "route", "get", tcp.stdout.trimmingCharacters(in: .whitespacesAndNewlines)])
    }
    #expect(learned.stdout.contains("mtu 1400"), "the server's kernel did not learn the path MTU: \(learned.stdout)")
    // Now the server's kernel fragments the 1478-byte reply; the fragments follow the first one's
    // translation and the VM's kernel reassembles all 1450 bytes.
    var fragmented = try await exec(lab, "vm/vm-1", ["sh", "-c", "echo big | socat -T 2 - UDP:192.0.2.100:5354 | wc -c"])
    for _ in 0..<2 where fragmented.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0" {
      fragmented = try await exec(lab, "vm/vm-1", ["sh", "-c", "echo big | socat -T 2 - UDP:192.0.2.100:5354 | wc -c"])
    }
    #expect(fragmented.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1450", "fragmented reply: \(fragmented.stdout) \(fragmented.stderr)")

    // RFC 5780 behaviour discovery, coturn's client in the VM against coturn's server on two
    // public addresses: endpoint-independent mapping, address-and-port-dependent filtering.
    var discovery = try await exec(lab, "vm/vm-1", ["turnutils_natdiscovery", "-m", "-f", "192.0.2.101"], timeout: .seconds(60))
    // (Its filtering test expects timeouts; a lost datagram shows as a missing verdict line.)
    for _ in 0..<2 where !discovery.stdout.contains("Mapping!") || !discovery.stdout.contains("Filtering!") {
      discovery = try await exec(lab, "vm/vm-1", ["turnutils_natdiscovery", "-m", "-f", "192.0.2.101"], timeout: .seconds(60))
    }
    #expect(discovery.stdout.contains("NAT with Endpoint Independent Mapping!"), "\(discovery.stdout)")
    #expect(discovery.stdout.contains("NAT with Address and Port Dependent Filtering!"), "\(discovery.stdout)")

    // Inbound probes get no answer: an unsolicited SYN to the NAT IP times out (no RST), and a
    // UDP datagram from a server port the VM never contacted gets nothing back.
    let natIP = tcp.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let agentStatus = lab + "/agents/host-1/status.json"
    try await Task.sleep(for: .milliseconds(1500))
    let counted = try engineCounters(agentStatus)
    let syn = try await exec(lab, "internet", ["socat", "-T", "2", "-", "TCP:\(natIP):1100,connect-timeout=2"])
    #expect(syn.exitCode != 0 && syn.stderr.contains("timed out"), "unsolicited SYN: \(syn.stderr)")
    let unsolicited = try await exec(lab, "internet", ["sh", "-c", "echo probe | socat -T 2 - UDP:\(natIP):1100,sourceport=9999"])
    #expect(unsolicited.stdout.isEmpty, "an unsolicited UDP datagram was answered: \(unsolicited.stdout)")
    // The agent writes its status once a second: the probes were filtered and made no flow.
    var after = try engineCounters(agentStatus)
    let settled = ContinuousClock.now + .seconds(6)
    while after.filteredInbound < counted.filteredInbound + 2 && ContinuousClock.now < settled {
      try await Task.sleep(for: .milliseconds(250))
      after = try engineCounters(agentStatus)
    }
    #expect(after.flowsCreated == counted.flowsCreated, "inbound probes created flows: \(counted) -> \(after)")
    #expect(after.filteredInbound >= counted.filteredInbound + 2, "probes not counted as filtered: \(counted) -> \(after)")

    // Down: every namespace and process of the lab is gone, the servers started inside too
    // (their `lab exec` parents are still running: down must end what runs in its namespaces).
    let down = try await Hostnat.run(["lab", "down", "--dir", lab], timeout: .seconds(60))
    #expect(down.exitCode == 0, "\(down.stderr)")
    let left = Set(namespaces()).intersection(mine)
    #expect(left.isEmpty, "namespaces left: \(left.sorted())")
    let turn = dir.path + "/turndb"
    let survivors = (try FileManager.default.contentsOfDirectory(atPath: "/proc")).filter { pid in
      guard Int32(pid) != nil, let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
      return String(decoding: cmdline, as: UTF8.self).contains(turn)
    }
    #expect(survivors.isEmpty, "turnserver still running after lab down: \(survivors)")
    for process in background { process.kill() }
  }

  /// VM to VM with the kernels' own ping and TCP: no NAT, through the VPC fabric, and only once
  /// an ingress rule allows it (the implied rule denies); a VPC source outside the rule's range
  /// stays refused.
  @Test func vmsReachEachOtherInsideTheVPC() async throws {
    let dir = try TemporaryDirectory()
    let lab = dir.path + "/lab"
    let up = try await Hostnat.run(["lab", "up", "--netns", "--dir", lab], timeout: .seconds(120))
    #expect(up.exitCode == 0, "\(up.stderr)")
    defer { labDownNow(lab) }
    let state = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: lab + "/lab.json"))) as? [String: Any]
    let controller = try #require(state?["controller"] as? String)
    // An agent learns where a VM is from the VM's first packet: vm-2 says something first.
    _ = try await exec(lab, "vm/vm-2", ["ping", "-c", "1", "-W", "2", "192.0.2.100"])

    let denied = try await exec(lab, "vm/vm-1", ["ping", "-c", "2", "-W", "1", "10.240.0.3"])
    #expect(denied.exitCode != 0, "the implied deny-ingress let a ping in: \(denied.stdout)")
    let rule = try await Hostnat.run([
      "firewall-rules", "create", "allow-internal", "--network", "vpc", "--direction", "INGRESS", "--action", "allow",
      "--rules", "icmp,tcp:8081", "--source-ranges", "10.240.0.0/24", "--controller", controller,
    ])
    #expect(rule.exitCode == 0, "\(rule.stderr)")
    var ping = try await exec(lab, "vm/vm-1", ["ping", "-c", "3", "-W", "2", "10.240.0.3"])
    for _ in 0..<4 where !ping.stdout.contains("3 received") {
      try await Task.sleep(for: .seconds(1))
      ping = try await exec(lab, "vm/vm-1", ["ping", "-c", "3", "-W", "2", "10.240.0.3"])
    }
    #expect(ping.stdout.contains("3 received"), "\(ping.stdout) \(ping.stderr)")

    // TCP: a server in vm-2 sees vm-1's own address, not a NAT IP.
    let server = try BackgroundProcess([
      "lab", "exec", "--dir", lab, "vm/vm-2", "--", "timeout", "30", "socat", "TCP-LISTEN:8081,bind=10.240.0.3,reuseaddr,fork",
      "SYSTEM:echo $SOCAT_PEERADDR",
    ])
    defer { server.kill() }
    let deadline = ContinuousClock.now + .seconds(20)
    while ContinuousClock.now < deadline, !(try await exec(lab, "vm/vm-2", ["ss", "-Htln"]).stdout.contains(":8081 ")) {
      try await Task.sleep(for: .milliseconds(200))
    }
    var tcp = try await exec(lab, "vm/vm-1", ["socat", "-T", "3", "-", "TCP:10.240.0.3:8081,connect-timeout=3"])
    for _ in 0..<2 where tcp.exitCode != 0 {
      tcp = try await exec(lab, "vm/vm-1", ["socat", "-T", "3", "-", "TCP:10.240.0.3:8081,connect-timeout=3"])
    }
    #expect(tcp.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "10.240.0.2", "tcp: \(tcp.stdout) \(tcp.stderr)")

    // vm-5 (subnet-2, 172.16.0.2) is inside the VPC too, but outside the rule's source range.
    let outside = try await exec(lab, "vm/vm-5", ["ping", "-c", "2", "-W", "1", "10.240.0.3"])
    #expect(outside.exitCode != 0, "a source the rule does not allow got in: \(outside.stdout)")
    let status = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: lab + "/agents/host-2/status.json"))) as? [String: Any]
    let global = (status?["dataplane"] as? [String: Any])?["global"] as? [String: Any]
    #expect((global?["vpcIn"] as? Int ?? 0) > 0 && (global?["firewallDeniedIngress"] as? Int ?? 0) > 0, "\(global ?? [:])")
  }

  /// A UDP mapping outlives idle gaps shorter than the gateway's UDP timeout and is made anew
  /// after a longer one: seen by a real server (the NAT port) and in the NAT log (a new entry).
  @Test func udpMappingLifetimeFollowsTheTimeout() async throws {
    let dir = try TemporaryDirectory()
    let lab = dir.path + "/lab"
    let yaml = try String(contentsOf: repositoryRoot.appendingPathComponent("deploy/lab/default.yaml"), encoding: .utf8)
      .replacingOccurrences(of: "        logging: ALL\n", with: "        logging: ALL\n        udpIdleTimeoutSec: 4\n")
    #expect(yaml.contains("udpIdleTimeoutSec: 4"))
    let topology = dir.path + "/short-udp.yaml"
    try yaml.write(toFile: topology, atomically: true, encoding: .utf8)
    let up = try await Hostnat.run(["lab", "up", "--netns", "--dir", lab, "--topology", topology], timeout: .seconds(120))
    #expect(up.exitCode == 0, "\(up.stderr)")
    defer { labDownNow(lab) }
    let server = try BackgroundProcess([
      "lab", "exec", "--dir", lab, "internet", "--", "timeout", "60",
      "socat", "UDP-RECVFROM:5355,bind=192.0.2.100,fork", "SYSTEM:echo $SOCAT_PEERADDR $SOCAT_PEERPORT",
    ])
    try await waitForListeners(lab, ["udp:5355"])
    func ask() async throws -> String {
      // Asked again when no answer comes: a lost datagram is not what this test is about (under a
      // full test run on 2 cores, three 1 s tries in a row once went unanswered).
      for _ in 0..<5 {
        let r = try await exec(lab, "vm/vm-1", ["sh", "-c", "echo ask | socat -T 1 - UDP:192.0.2.100:5355,sourceport=40000"])
        let answer = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        if !answer.isEmpty { return answer }
      }
      return ""
    }
    let first = try await ask()
    #expect(first.hasPrefix("203.0.113."), "\(first)")
    try await Task.sleep(for: .seconds(2))
    let kept = try await ask()
    #expect(kept == first, "a 2 s gap (< 4 s UDP timeout) kept the mapping: \(first) then \(kept)")
    try await Task.sleep(for: .seconds(7))
    let renewed = try await ask()
    #expect(renewed.hasPrefix("203.0.113."), "\(renewed)")
    // The agent writes its NAT log once a second.
    try await Task.sleep(for: .seconds(2))
    let logs = try await Hostnat.run([
      "logs", "read", "--dir", lab, "--format", "json", "--limit", "50",
      "--filter", "jsonPayload.connection.src_port=40000 AND jsonPayload.connection.dest_port=5355",
    ])
    #expect(logs.exitCode == 0, "\(logs.stderr)")
    // JSON lines, one entry each.
    let entries = logs.stdout.split(separator: "\n").filter { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) != nil }
    #expect(entries.count == 2, "one translation at the start and one after the timeout, none for the refresh: \(logs.stdout)")
    server.kill()
  }

  @Test func labExecRefusesWhatIsNotThere() async throws {
    let dir = try TemporaryDirectory()
    let none = try await Hostnat.run(["lab", "exec", "--dir", dir.path, "vm/vm-1", "--", "true"])
    #expect(none.exitCode == 1)
    #expect(none.stderr.contains("no namespace for vm/vm-1"), "\(none.stderr)")
    let bad = try await Hostnat.run(["lab", "exec", "--dir", dir.path, "host-1", "--", "true"])
    #expect(bad.exitCode == 1)
    #expect(bad.stderr.contains("is not vm/NAME or internet"), "\(bad.stderr)")
  }
}
