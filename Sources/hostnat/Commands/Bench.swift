import ArgumentParser
import Foundation
import HostnatBench

/// In-memory benchmarks of the pure modules. Build with `-c release` before trusting figures.
struct BenchCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench",
    abstract: "Measure the translation engine and the allocation planner in memory.",
    subcommands: [EngineBench.self, PlannerBench.self]
  )
}

struct EngineBench: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "engine",
    abstract: "Established-flow Mpps, new flows per second and bytes per flow of the translation engine."
  )

  @Option(help: "Active flows in the table while measuring.")
  var flows: Int = 65_536

  @Flag(help: "Print one JSON object instead of a table.")
  var json = false

  func validate() throws {
    // 256 VMs share the flows; beyond about 8 M each VM would need more ports than one NAT IP has.
    guard (1...4_000_000).contains(flows) else { throw ValidationError("--flows must be between 1 and 4000000, got \(flows)") }
  }

  func run() throws {
    warnIfDebug()
    let result = try EngineBenchmark.run(flows: flows)
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
