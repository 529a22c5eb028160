import ArgumentParser
import Foundation
import HostnatBench
import HostnatNetns

/// In-memory benchmarks of the pure modules. Build with `-c release` before trusting figures.
struct BenchCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench",
    abstract: "Measure the translation engine and the allocation planner in memory, and the data plane against the kernel's NAT.",
    subcommands: [EngineBench.self, PlannerBench.self, DataplaneBenchCommand.self]
  )
}

struct EngineBench: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "engine",
    abstract: "Established-flow Mpps, new flows per second and bytes per flow of the translation engine."
  )

  @Option(help: "Active flows in the table while measuring.")
  var flows: Int = 65_536

  @Option(help: "Egress firewall rules (none matching) every new flow is checked against; half of them by target tag.")
  var firewallRules: Int = 0

  @Flag(help: "Print one JSON object instead of a table.")
  var json = false

  func validate() throws {
    // 256 VMs share the flows; beyond about 8 M each VM would need more ports than one NAT IP has.
    guard (1...4_000_000).contains(flows) else { throw ValidationError("--flows must be between 1 and 4000000, got \(flows)") }
    guard (0...10_000).contains(firewallRules) else { throw ValidationError("--firewall-rules must be between 0 and 10000, got \(firewallRules)") }
  }

  func run() throws {
    warnIfDebug()
    let result = try EngineBenchmark.run(flows: flows, firewallRules: firewallRules)
    try emit(result, json: json)
  }
}

struct PlannerBench: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "planner",
    abstract: "Full allocation time and single-VM change time of the allocation planner."
  )

  @Option(help: "VMs to allocate for.")
  var vms: Int = 100_000

  @Flag(help: "Print one JSON object instead of a table.")
  var json = false

  func validate() throws {
    guard (1...1_000_000).contains(vms) else { throw ValidationError("--vms must be between 1 and 1000000, got \(vms)") }
  }

  func run() throws {
    warnIfDebug()
    let result = PlannerBenchmark.run(vms: vms)
    try emit(result, json: json)
  }
}

/// Prints a benchmark result as one JSON object, or as an aligned `key  value` table whose
/// keys are the JSON keys, so the two forms can never disagree.
func emit(_ result: some Encodable, json: Bool) throws {
  let line = try jsonLine(result)
  if json {
    print(line)
    return
  }
  guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
    print(line)
    return
  }
  let width = object.keys.map(\.count).max() ?? 0
  for key in object.keys.sorted() {
    let value = object[key].map { value -> String in
      if let number = value as? Double, number != number.rounded() { return String(format: "%.3f", number) }
      return "\(value)"
    } ?? ""
    print(key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
  }
}

func jsonLine(_ value: some Encodable) throws -> String {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.sortedKeys]
  return String(decoding: try encoder.encode(value), as: UTF8.self)
}

func warnIfDebug() {
  #if DEBUG
  FileHandle.standardError.write(Data("warning: debug build; figures are meaningless. Use `swift run -c release hostnat bench ...`\n".utf8))
  #endif
}

struct DataplaneBenchCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dataplane",
    abstract: "UDP through the kernel's NAT (nftables masquerade) and through a hostnat agent and edge, alternating: pps, latency, ratio.",
    discussion: """
      Linux, root, iproute2 and nftables. Creates its namespaces, veths and TUN devices with unique \
      names and removes them at the end. JSON keys: kernel_pps, hostnat_pps, ratio, kernel_p50_us, \
      hostnat_p50_us, kernel_p99_us, hostnat_p99_us (and every round under samples).
      """)

  @Option(help: "Rounds per path (alternating kernel, hostnat).") var rounds = 3
  @Option(help: "Seconds of sending per round.") var seconds = 2.0
  @Option(help: "UDP round trips per round for the latency percentiles.") var pings = 2000
  @Option(help: "UDP payload bytes.") var payload = 64
  @Flag(help: "Print one JSON object instead of a table.") var json = false

  func validate() throws {
    guard (1...20).contains(rounds) else { throw ValidationError("--rounds must be between 1 and 20, got \(rounds)") }
    guard seconds > 0 && seconds <= 60 else { throw ValidationError("--seconds must be in (0, 60], got \(seconds)") }
    guard (1...1_000_000).contains(pings) else { throw ValidationError("--pings must be between 1 and 1000000, got \(pings)") }
    guard (8...1400).contains(payload) else { throw ValidationError("--payload must be between 8 and 1400, got \(payload)") }
  }

  func run() throws {
    if let why = DataplaneBench.unavailableReason() {
      FileHandle.standardError.write(Data("hostnat bench dataplane: \(why)\n".utf8))
      throw ExitCode(2)
    }
    warnIfDebug()
    let options = DataplaneBenchOptions(
      rounds: rounds, duration: .milliseconds(Int64(seconds * 1000)), pings: pings, payloadBytes: payload)
    let result: DataplaneBenchResult
    do {
      result = try DataplaneBench.run(options) { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
    } catch {
      FileHandle.standardError.write(Data("hostnat bench dataplane: \(error)\n".utf8))
      throw ExitCode(1)
    }
    print(json ? result.json() : result.text)
  }
}
