import HostnatAddressing
internal import Foundation
internal import Glibc
internal import HostnatDataplane
internal import HostnatPackets
internal import Synchronization

/// What `DataplaneBench.run` measures and how long.
public struct DataplaneBenchOptions: Sendable, Hashable {
  /// Rounds per path, alternated kernel, hostnat, kernel, hostnat...; the result is each path's
  /// median round, so one disturbed round does not decide.
  public var rounds: Int
  /// How long the generator sends in each throughput round.
  public var duration: Duration
  /// Request/response round trips timed per round (latency).
  public var pings: Int
  /// UDP payload of every datagram (64: 92-byte IPv4 packets, where per-packet costs dominate).
  public var payloadBytes: Int
  /// Datagrams per sendmmsg of the generator, and batch size of the agent, edge and bridges.
  public var batchSize: Int
  /// Prefix of every namespace created (nil: "hnb-PID-N", unique per process and call).
  public var namePrefix: String?

  public init(
    rounds: Int = 3, duration: Duration = .seconds(2), pings: Int = 2000, payloadBytes: Int = 64, batchSize: Int = 64,
    namePrefix: String? = nil
  ) {
    self.rounds = rounds
    self.duration = duration
    self.pings = pings
    self.payloadBytes = payloadBytes
    self.batchSize = batchSize
    self.namePrefix = namePrefix
  }
}

/// One round of one path.
public struct DataplaneBenchRound: Codable, Sendable, Hashable {
  /// "kernel" or "hostnat".
  public var path: String
  /// 0-based; rounds of the two paths with the same number ran back to back.
  public var round: Int
  /// Datagrams the generator's kernel accepted (sendmmsg's count).
  public var sent: UInt64
  /// Datagrams the sink received.
  public var received: UInt64
  /// Received packets per second, between the sink's first and last batch.
  public var pps: Double
  public var p50Us: Double
  public var p99Us: Double
  /// Round trips answered (of `pings`).
  public var pingsAnswered: Int

  enum CodingKeys: String, CodingKey {
    case path, round, sent, received, pps
    case p50Us = "p50_us"
    case p99Us = "p99_us"
    case pingsAnswered = "pings_answered"
  }
}

/// The outcome of `DataplaneBench.run`: per path the median round's received packets per second
/// and round-trip percentiles, and hostnat's throughput as a fraction of the kernel's. Encodes to
/// JSON with the keys `kernel_pps`, `hostnat_pps`, `ratio`, `kernel_p50_us`, `hostnat_p50_us`,
/// `kernel_p99_us`, `hostnat_p99_us`, plus the settings and every round.
public struct DataplaneBenchResult: Codable, Sendable, Hashable {
  public var kernelPPS: Double
  public var hostnatPPS: Double
  /// hostnatPPS / kernelPPS (0 when the kernel path delivered nothing).
  public var ratio: Double
  public var kernelP50Us: Double
  public var hostnatP50Us: Double
  public var kernelP99Us: Double
  public var hostnatP99Us: Double
  public var rounds: Int
  public var durationSeconds: Double
  public var pings: Int
  public var payloadBytes: Int
  public var batchSize: Int
  /// Every round in the order run.
  public var samples: [DataplaneBenchRound]
  /// The hostnat path's counters over the whole run (where packets were dropped, if they were).
  public var hostnatCounters: HostnatPathCounters
  /// The namespaces' prefix (all of them are gone when `run` returns).
  public var namePrefix: String
  /// CPUs online and the 1-minute load average when the run started: both paths share them with
  /// whatever else runs, and the hostnat path has more threads to schedule (see the report).
  public var cpus: Int
  public var loadAverage: Double

  enum CodingKeys: String, CodingKey {
    case kernelPPS = "kernel_pps"
    case hostnatPPS = "hostnat_pps"
    case ratio
    case kernelP50Us = "kernel_p50_us"
    case hostnatP50Us = "hostnat_p50_us"
    case kernelP99Us = "kernel_p99_us"
    case hostnatP99Us = "hostnat_p99_us"
    case rounds
    case durationSeconds = "duration_s"
    case pings
    case payloadBytes = "payload_bytes"
    case batchSize = "batch_size"
    case samples
    case hostnatCounters = "hostnat_counters"
    case namePrefix = "name_prefix"
    case cpus
    case loadAverage = "load_average_1m"
  }

  /// One JSON object (keys sorted, so runs diff cleanly).
  public func json(pretty: Bool = false) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted] : [.sortedKeys]
    // Every Double is finite by construction (ratio is 0, not NaN, without a kernel figure).
    guard let data = try? encoder.encode(self) else { return "{}" }
    return String(decoding: data, as: UTF8.self)
  }

  /// Both paths side by side, the ratio, then every round.
  public var text: String {
    func num(_ v: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", v) }
    func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
    var lines: [String] = []
    lines.append(
      "dataplane: UDP \(payloadBytes)-byte payloads, \(rounds) round(s) per path alternating, "
        + "\(num(durationSeconds, 1)) s of sending and \(pings) round trips per round; medians "
        + "(\(cpus) CPUs, load \(num(loadAverage, 2)) at start)")
    lines.append(pad("", 18) + pad("kernel (nftables)", 20) + pad("hostnat (agent+edge)", 23) + pad("hostnat/kernel", 17))
    lines.append(pad("packets/s", 18) + pad(num(kernelPPS, 0), 20) + pad(num(hostnatPPS, 0), 23) + pad(num(ratio, 2), 17))
    lines.append(pad("RTT p50 (us)", 18) + pad(num(kernelP50Us, 1), 20) + pad(num(hostnatP50Us, 1), 23))
    lines.append(pad("RTT p99 (us)", 18) + pad(num(kernelP99Us, 1), 20) + pad(num(hostnatP99Us, 1), 23))
    lines.append("rounds:")
    for s in samples {
      lines.append(
        "  \(s.round) \(s.path.padding(toLength: 8, withPad: " ", startingAt: 0)) sent \(pad(String(s.sent), 9)) "
          + "received \(pad(String(s.received), 9)) \(pad(num(s.pps, 0), 9)) pps  "
          + "p50 \(pad(num(s.p50Us, 1), 7)) us  p99 \(pad(num(s.p99Us, 1), 7)) us  (\(s.pingsAnswered)/\(pings) answered)")
    }
    return lines.joined(separator: "\n")
  }
}

/// `hostnat bench dataplane`: the same UDP generator and sink through (a) a Linux router namespace
/// doing NAT with nftables masquerade and (b) a hostnat agent and edge (TUN bridges at both ends),
/// set up side by side and measured alternately in one run. Needs Linux, root, iproute2's `ip`,
/// /dev/net/tun and `nft` (Debian package nftables): see `unavailableReason`.
///
/// Each round: the generator sends `payloadBytes`-byte datagrams with sendmmsg as fast as the
/// kernel takes them for `duration`, the sink in the server namespace counts what arrives (received
/// packets per second); then `pings` request/response round trips through an echo, timed in the
/// client (p50, p99). Everything created (namespaces, veths, TUN devices, nft table) is removed
/// before `run` returns, also when it throws.
///
/// ```swift
/// let result = try DataplaneBench.run(DataplaneBenchOptions())
/// print(json ? result.json() : result.text)
/// ```
public enum DataplaneBench {
  static let sinkPort: UInt16 = 9000
  static let echoPort: UInt16 = 9001
  static let blastPort: UInt16 = 40000
  static let pingPort: UInt16 = 40001
  private static let runCounter = Atomic<Int>(0)

  /// Nil when `run` can work here; otherwise why not (for a skip message or the CLI's error).
  public static func unavailableReason() -> String? {
    if let reason = NetworkNamespace.unavailableReason() { return reason }
    if Command.find("nft") == nil { return "needs nft (Debian package nftables)" }
    return nil
  }

  /// Sets up both paths, runs the rounds, tears everything down. `progress` hears a line per step
  /// (e.g. for a CLI's stderr). Throws when setting up fails or a path delivers nothing at all.
  public static func run(
    _ options: DataplaneBenchOptions = DataplaneBenchOptions(), progress: (@Sendable (String) -> Void)? = nil
  ) throws(NetnsError) -> DataplaneBenchResult {
    if let reason = unavailableReason() { throw NetnsError(.unsupported, reason) }
    guard options.rounds >= 1, options.rounds <= 100 else { throw NetnsError(.unsupported, "rounds \(options.rounds): 1...100") }
    guard options.duration > .zero, options.duration <= .seconds(60) else {
      throw NetnsError(.unsupported, "duration \(options.duration): up to 60 s")
    }
    guard (1...100_000).contains(options.pings) else { throw NetnsError(.unsupported, "pings \(options.pings): 1...100000") }
    guard (8...1372).contains(options.payloadBytes) else {
      throw NetnsError(.unsupported, "payload \(options.payloadBytes) bytes: 8...1372 (the VM MTU is \(PathMTU.vmMTU))")
    }
    guard (1...1024).contains(options.batchSize) else { throw NetnsError(.unsupported, "batch size \(options.batchSize): 1...1024") }
    let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    var loads = [Double](repeating: 0, count: 3)
    let loadAverage = getloadavg(&loads, 3) >= 1 ? loads[0] : 0
    let prefix = options.namePrefix ?? "hnb-\(getpid())-\(runCounter.add(1, ordering: .relaxed).newValue)"

    var paths: [any BenchPath] = []
    var sides: [Side] = []
    defer {
      // Sockets first: a socket left open keeps its namespace alive after its name is gone.
      for side in sides { side.close() }
      sides = []
      for path in paths.reversed() { _ = path.teardown() }
    }
    progress?("setting up the kernel path (\(prefix)-k*: veths, nftables masquerade)")
    let kernel = try KernelNATPath(prefix: prefix)
    paths.append(kernel)
    progress?("setting up the hostnat path (\(prefix)-h*: TUN bridges, agent, edge)")
    let hostnat = try HostnatNATPath(prefix: prefix, batchSize: options.batchSize)
    paths.append(hostnat)

    let kernelSide = try Side(name: "kernel", path: kernel)
    sides.append(kernelSide)
    let hostnatSide = try Side(name: "hostnat", path: hostnat)
    sides.append(hostnatSide)
    for side in sides {
      // ARP, conntrack and the agent's flows for both client sockets before anything is timed.
      let warm = BenchClient.pingPong(side.ping, count: 20, payload: options.payloadBytes, limit: .seconds(3))
      guard !warm.isEmpty else {
        throw NetnsError(
          .commandFailed, "the \(side.name) path answers no round trip\(side === hostnatSide ? ": \(hostnat.counters())" : "")")
      }
    }

    var samples: [DataplaneBenchRound] = []
    for round in 0..<options.rounds {
      for side in sides {
        progress?("round \(round + 1)/\(options.rounds): \(side.name)")
        samples.append(side.measure(round: round, options: options))
      }
    }
    let counters = hostnat.counters()

    func median(_ path: String, _ value: (DataplaneBenchRound) -> Double) -> Double {
      let values = samples.filter { $0.path == path }.map(value).sorted()
      guard !values.isEmpty else { return 0 }
      let mid = values.count / 2
      return values.count % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2
    }
    let kernelPPS = median("kernel", \.pps)
    let hostnatPPS = median("hostnat", \.pps)
    let (seconds, attoseconds) = options.duration.components
    return DataplaneBenchResult(
      kernelPPS: kernelPPS, hostnatPPS: hostnatPPS, ratio: kernelPPS > 0 ? hostnatPPS / kernelPPS : 0,
      kernelP50Us: median("kernel", \.p50Us), hostnatP50Us: median("hostnat", \.p50Us),
      kernelP99Us: median("kernel", \.p99Us), hostnatP99Us: median("hostnat", \.p99Us), rounds: options.rounds,
      durationSeconds: Double(seconds) + Double(attoseconds) / 1e18, pings: options.pings,
      payloadBytes: options.payloadBytes, batchSize: options.batchSize, samples: samples, hostnatCounters: counters,
      namePrefix: prefix, cpus: cpus, loadAverage: loadAverage)
  }

  /// One path's sockets and server threads, kept for the whole run so every round uses the same
  /// flows (the first packet's setup cost, NAT or conntrack, is paid during the warm-up).
  final class Side {
    let name: String
    let server: BenchServer
    let blast: UDPSocket
    let ping: UDPSocket

    init(name: String, path: any BenchPath) throws(NetnsError) {
      self.name = name
      let sink = try benchSocket(
        in: path.server, local: SocketAddress(ip: path.serverIP, port: DataplaneBench.sinkPort),
        receiveTimeout: .milliseconds(20))
      let echo = try benchSocket(
        in: path.server, local: SocketAddress(ip: path.serverIP, port: DataplaneBench.echoPort),
        receiveTimeout: .milliseconds(20))
      server = BenchServer(sink: sink, echo: echo)
      blast = try benchSocket(
        in: path.client, local: SocketAddress(ip: path.clientIP, port: DataplaneBench.blastPort),
        remote: SocketAddress(ip: path.serverIP, port: DataplaneBench.sinkPort), receiveTimeout: .milliseconds(20))
      ping = try benchSocket(
        in: path.client, local: SocketAddress(ip: path.clientIP, port: DataplaneBench.pingPort),
        remote: SocketAddress(ip: path.serverIP, port: DataplaneBench.echoPort), receiveTimeout: .milliseconds(200))
      server.start()
    }

    func close() {
      server.stop()
      blast.close()
      ping.close()
    }

    func measure(round: Int, options: DataplaneBenchOptions) -> DataplaneBenchRound {
      server.resetCount()
      let sent = BenchClient.blast(blast, payload: options.payloadBytes, batch: options.batchSize, duration: options.duration)
      // Queues along the path drain at the path's own rate: wait until the sink has seen nothing
      // new for 100 ms (at most 3 s), so the next phase runs on an idle path.
      var seen = server.count().packets
      var quiet = 0
      var checks = 0
      while quiet < 10 && checks < 300 {
        checks += 1
        usleep(10_000)
        let now = server.count().packets
        quiet = now == seen ? quiet + 1 : 0
        seen = now
      }
      let count = server.count()
      let rtts = BenchClient.pingPong(ping, count: options.pings, payload: options.payloadBytes, limit: .seconds(30)).sorted()
      return DataplaneBenchRound(
        path: name, round: round, sent: sent, received: count.packets, pps: count.packetsPerSecond,
        p50Us: percentileMicroseconds(rtts, 50), p99Us: percentileMicroseconds(rtts, 99), pingsAnswered: rtts.count)
    }
  }
}
