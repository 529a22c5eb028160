import Foundation
import HostnatContracts
import HostnatProto
import HostnatNetns

/// The lab's operations on a directory: bring a cluster up, report on it, take it down.
public struct Lab: Sendable {
  public var dir: String
  /// Progress lines go here (stdout for the CLI, a collector in tests).
  public var say: @Sendable (String) -> Void
  /// `lab up --trace-control`: the controller, the edge and every agent write each control
  /// message to `control-trace.jsonl` in their state dir (read with `hostnat trace show`).
  public var traceControl = false
  /// `lab up --netns`: every VM is a network namespace with a TUN device, and the Internet side
  /// is one too (`NetnsLab`), so real programs run behind the NAT (`hostnat lab exec`).
  public var netns = false

  public init(dir: String, say: @escaping @Sendable (String) -> Void = { print($0) }) {
    self.dir = (dir as NSString).standardizingPath.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + "/" + dir
    self.say = say
  }

  /// Starts the whole cluster for `topology` and returns when every host and the edge have
  /// acknowledged the controller's latest config.
  public func up(_ topology: Topology, topologyName: String, executable: String = Processes.selfExecutable) async throws -> LabState {
    if let existing = try? LabState.load(dir), existing.processes.contains(where: { Processes.isRunning($0.pid) }) {
      throw LabError("a lab is already running in \(dir) (hostnat lab down --dir \(dir) first)")
    }
    if netns, let reason = NetworkNamespace.unavailableReason() {
      throw LabError("--netns: \(reason)")
    }
    let fm = FileManager.default
    // A namespace left by a lab in this dir that was killed rather than taken down.
    NetnsLab.removeNamespaces(labDir: dir)
    for sub in ["logs", "controller", "edge", "agents", "vms", "proxies"] {
      try? fm.removeItem(atPath: dir + "/" + sub)
    }
    try fm.createDirectory(atPath: dir + "/logs", withIntermediateDirectories: true)
    let controllerPort = try Processes.freePort()
    let edgePort = try Processes.freePort()
    let controller = "127.0.0.1:\(controllerPort)"
    let edge = "127.0.0.1:\(edgePort)"
    var state = LabState(
      dir: dir, topology: topologyName, executable: executable, controller: controller, edge: edge,
      startedMs: nowMs(), processes: [])

    func launch(_ name: String, _ arguments: [String], stateDir: String, address: String, metrics: Bool = false) throws {
      let log = dir + "/logs/" + name.replacingOccurrences(of: "/", with: "-") + ".log"
      try fm.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
      var arguments = arguments
      if traceControl && !name.hasPrefix("proxy/") && !name.hasPrefix("vm/") {
        arguments += ["--trace-control", stateDir + "/control-trace.jsonl"]
      }
      var metricsAddress: String?
      if metrics {
        metricsAddress = "127.0.0.1:\(try Processes.freePort())"
        arguments += ["--metrics", metricsAddress!]
      }
      let pid = try Processes.spawn(executable, arguments, log: log)
      state.replace(LabProcess(name: name, pid: pid, arguments: arguments, log: log, stateDir: stateDir, address: address, metrics: metricsAddress))
      try state.save()
    }

    // A cluster that cannot come up whole is taken down again: nothing is left running.
    do {
      say("lab \(topologyName) in \(dir)")
      try launch(
        "controller", ["controller", "--data-dir", dir + "/controller", "--listen", controller],
        stateDir: dir + "/controller", address: controller, metrics: true)
      let admin = try LabAdmin(controller: controller)
      try await admin.waitUntilServing(timeout: .seconds(30))
      say("  controller   up on \(controller)")
      try await admin.apply(topology)
      let natCount = (topology.routers ?? []).reduce(0) { $0 + ($1.nats?.count ?? 0) }
      say("  intent       \(topology.networks.count) network(s), \(topology.networks.reduce(0) { $0 + $1.subnets.count }) subnet(s), \(natCount) NAT gateway(s), \(topology.instances.count) VM(s)")
  
      // Each host's and the edge's control connection goes through its own fault proxy, so
      // `lab chaos partition|control` can disturb one channel while the data path stays up.
      var controlAddress: [String: String] = [:]
      for component in topology.hosts.map({ "agent/\($0)" }) + ["edge"] {
        let port = try Processes.freePort()
        let key = component.replacingOccurrences(of: "agent/", with: "")
        let proxyDir = dir + "/proxies/" + key
        controlAddress[component] = "127.0.0.1:\(port)"
        try launch(
          "proxy/\(key)",
          ["control-proxy", "--listen", "127.0.0.1:\(port)", "--upstream", controller,
           "--faults", proxyDir + "/faults.json", "--status", proxyDir + "/status.json"],
          stateDir: proxyDir, address: "127.0.0.1:\(port)")
      }
      var uplink: [String] = []
      if netns {
        let bridge = "127.0.0.1:\(try Processes.freePort())"
        try launch(
          "netns/internet",
          ["netns", "internet", "--namespace", NetnsLab.namespace(labDir: dir, role: "internet"),
           "--address", NetnsLab.internetAddress + "/32"] + NetnsLab.internetServerIPs.flatMap { ["--server-ip", $0] }
            + ["--edge", edge, "--underlay", bridge],
          stateDir: dir + "/netns/internet", address: bridge)
        uplink = ["--uplink", bridge]
      }
      try launch(
        "edge", ["edge", "--controller", controlAddress["edge"] ?? controller, "--underlay", edge, "--state-dir", dir + "/edge"]
          + topology.servers.flatMap { ["--server", "\($0.ip)=\($0.services.joined(separator: ","))"] } + uplink,
        stateDir: dir + "/edge", address: edge, metrics: true)
      var agentAddress: [String: String] = [:]
      for host in topology.hosts {
        let port = try Processes.freePort()
        agentAddress[host] = "127.0.0.1:\(port)"
        try launch(
          "agent/\(host)",
          ["agent", "--host-id", host, "--controller", controlAddress["agent/\(host)"] ?? controller, "--underlay", "127.0.0.1:\(port)",
           "--state-dir", dir + "/agents/" + host, "--edge", edge],
          stateDir: dir + "/agents/" + host, address: "127.0.0.1:\(port)", metrics: true)
      }
      say("  data plane   edge on \(edge), \(topology.hosts.count) host agent(s)")
      try await waitForConvergence(admin, hosts: topology.hosts, timeout: .seconds(30))
      say("  converged    every host and the edge acknowledged the latest config")
  
      for instance in topology.instances where netns {
        let prefix = topology.networks.flatMap(\.subnets).first { $0.name == instance.subnet }
          .flatMap { $0.range.split(separator: "/").last.map(String.init) } ?? "32"
        try launch(
          "vm/\(instance.name)",
          ["netns", "vm", "--namespace", NetnsLab.namespace(labDir: dir, role: "vm-" + instance.name),
           "--address", "\(instance.ip ?? "")/\(prefix)", "--agent", agentAddress[instance.host] ?? ""],
          stateDir: dir + "/vms/" + instance.name, address: agentAddress[instance.host] ?? "")
      }
      for instance in topology.instances where !netns {
        let stateDir = dir + "/vms/" + instance.name
        var arguments = [
          "vm", "--host-id", instance.host, "--name", instance.name, "--ip", instance.ip ?? "",
          "--agent", agentAddress[instance.host] ?? "", "--report", stateDir + "/report.json",
        ]
        arguments += topology.servers.flatMap { ["--server", "\($0.ip)=\($0.services.joined(separator: ","))"] }
        if let t = topology.traffic {
          if let v = t.udpEchoPps { arguments += ["--udp-pps", "\(v)"] }
          if let v = t.tcpChurnPerSec { arguments += ["--tcp-churn-per-sec", "\(v)"] }
          if let v = t.pingPps { arguments += ["--ping-pps", "\(v)"] }
        }
        try launch("vm/\(instance.name)", arguments, stateDir: stateDir, address: agentAddress[instance.host] ?? "")
      }
      if netns {
        // `lab up` promises the namespaces exist when it returns: `lab exec` and scripts start
        // at once, and on a busy machine a bridge takes longer than any fixed pause.
        try await waitForBridges(state.processes.filter { $0.arguments.first == "netns" }, timeout: .seconds(60))
      }
      say(netns
        ? "  namespaces   \(topology.instances.count) VM(s) and the Internet (\(([NetnsLab.internetAddress] + NetnsLab.internetServerIPs).joined(separator: ", "))); run programs with hostnat lab exec"
        : "  workloads    \(topology.instances.count) VM(s) sending traffic")
      try await Task.sleep(for: .milliseconds(300))
      let dead = state.processes.filter { !Processes.isRunning($0.pid) }
      if let first = dead.first {
        throw LabError("\(first.name) exited at start; see \(first.log)")
      }
      say("")
      say(Table.render(
        header: ["PROCESS", "PID", "ADDRESS", "METRICS", "LOG"],
        rows: state.processes.map { [$0.name, "\($0.pid)", $0.address, $0.metrics ?? "-", relative($0.log)] }))
      return state
    } catch {
      say("  bringing the lab up failed: \(error); stopping what was started")
      for prefix in ["vm/", "agent/", "edge", "netns/", "proxy/", "controller"] {
        await Processes.stop(state.processes.filter { $0.name.hasPrefix(prefix) }.map(\.pid))
      }
      if netns { NetnsLab.removeNamespaces(labDir: dir) }
      throw error
    }
  }

  func relative(_ path: String) -> String {
    let cwd = FileManager.default.currentDirectoryPath + "/"
    return path.hasPrefix(cwd) ? String(path.dropFirst(cwd.count)) : path
  }

  /// Waits until every namespace bridge has said it is ready (its first log line, written once
  /// the namespace, its device and its underlay socket exist), or fails naming the one that
  /// exited or is still not ready, with its log.
  func waitForBridges(_ bridges: [LabProcess], timeout: Duration) async throws {
    let deadline = ContinuousClock.now + timeout
    var waiting = bridges
    while !waiting.isEmpty {
      waiting = waiting.filter { bridge in
        let log = (try? String(contentsOfFile: bridge.log, encoding: .utf8)) ?? ""
        return !log.split(separator: "\n").contains { $0.hasPrefix("netns vm ") || $0.hasPrefix("netns internet ") }
      }
      if let dead = waiting.first(where: { !Processes.isRunning($0.pid) }) {
        throw LabError("\(dead.name) exited before its namespace was ready; see \(dead.log)")
      }
      if waiting.isEmpty { break }
      if ContinuousClock.now >= deadline {
        throw LabError("namespaces not ready after \(timeout): \(waiting.map(\.name).joined(separator: ", ")); see their logs in \(dir)/logs")
      }
      try await Task.sleep(for: .milliseconds(50))
    }
  }

  /// Waits until every named host and the edge are connected and have ACKed their latest version.
  public func waitForConvergence(_ admin: LabAdmin, hosts: [String], timeout: Duration) async throws {
    let deadline = ContinuousClock.now + timeout
    var last: [Hostnat_V1_HostStatus] = []
    while ContinuousClock.now < deadline {
      if let statuses = try? await admin.hosts() {
        last = statuses
        if Self.converged(statuses, hosts: hosts) { return }
      }
      try await Task.sleep(for: .milliseconds(100))
    }
    let detail = last.map { "\($0.hostID): connected=\($0.connected) acked \($0.lastVersionAcked)/\($0.latestVersion)" }.joined(separator: "; ")
    throw LabError("hosts did not converge within \(timeout): \(detail)")
  }

  static func converged(_ statuses: [Hostnat_V1_HostStatus], hosts: [String]) -> Bool {
    let byID = Dictionary(statuses.map { ($0.hostID, $0) }, uniquingKeysWith: { a, _ in a })
    for host in hosts + ["edge"] {
      guard let s = byID[host], s.connected, s.lastVersionAcked == s.latestVersion, s.latestVersion > 0 else { return false }
    }
    return true
  }

  /// Stops every process (SIGTERM, SIGKILL after a grace period), VMs first so their final
  /// reports are written, the controller last. Logs and state stay.
  public func down() async throws {
    let state = try LabState.load(dir)
    // Programs started in the lab's namespaces (`lab exec`) end first: a namespace process that
    // deletes its namespace on SIGTERM would leave them running in an unnamed one.
    NetnsLab.removeNamespaces(labDir: dir)
    let order = ["vm/", "agent/", "edge", "netns/", "proxy/", "controller"]
    var forced: [String] = []
    for prefix in order {
      let group = state.processes.filter { $0.name.hasPrefix(prefix) }
      let stubborn = await Processes.stop(group.map(\.pid))
      forced += group.filter { stubborn.contains($0.pid) }.map(\.name)
    }
    // A namespace process that was killed could not remove its namespace.
    NetnsLab.removeNamespaces(labDir: dir)
    let left = state.processes.filter { Processes.isRunning($0.pid) }
    guard left.isEmpty else { throw LabError("still running: \(left.map { "\($0.name) (\($0.pid))" }.joined(separator: ", "))") }
    say("lab in \(dir) is down (\(state.processes.count) processes stopped\(forced.isEmpty ? "" : "; needed SIGKILL: " + forced.joined(separator: ", "))); logs in \(relative(dir + "/logs"))")
  }
}

/// Plain aligned text tables, readable at 80 columns when the cells are short.
public enum Table {
  public static func render(header: [String], rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
      cells.enumerated().map { i, cell in i == cells.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
        .joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
  }
}
