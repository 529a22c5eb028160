import ArgumentParser
import Foundation
import HostnatLab

struct LabOptions: ParsableArguments {
  @Option(help: "The lab's directory: pids, ports, state and logs.") var dir: String = ".hostnat/lab"
}

struct LabCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lab",
    abstract: "A local hostnat cluster: controller, host agents, edge and VMs as processes on loopback.",
    subcommands: [LabUp.self, LabStatusCommand.self, LabDown.self, LabDemo.self])
}

/// Runs a lab operation, printing a lab error as one line and exiting 1.
func labMain(_ body: () async throws -> Void) async throws {
  do {
    try await body()
  } catch let error as LabError {
    FileHandle.standardError.write(Data("ERROR: \(error.description)\n".utf8))
    throw ExitCode(1)
  }
}

struct LabUp: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "up", abstract: "Start a lab in the background.")
  @OptionGroup var lab: LabOptions
  @Option(help: "Topology YAML file (default: the embedded deploy/lab/default.yaml).") var topology: String?

  func run() async throws {
    try await labMain {
      let (parsed, name) = try loadTopology(topology)
      _ = try await Lab(dir: lab.dir).up(parsed, topologyName: name)
    }
  }
}

func loadTopology(_ path: String?) throws -> (Topology, String) {
  guard let path else { return (Topology.default, "default") }
  guard let data = FileManager.default.contents(atPath: path) else { throw LabError("--topology: cannot read \(path)") }
  return (try Topology.parse(yaml: String(decoding: data, as: UTF8.self)), path)
}

struct LabStatusCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "status", abstract: "Processes, hosts' config versions, flows, drops and VM traffic.")
  @OptionGroup var lab: LabOptions
  @Flag(help: "One JSON object.") var json = false

  func run() async throws {
    try await labMain {
      let report = try await Lab(dir: lab.dir).status()
      print(json ? report.json() : report.text())
    }
  }
}

struct LabDown: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "down", abstract: "Stop every process of the lab (logs stay).")
  @OptionGroup var lab: LabOptions

  func run() async throws {
    try await labMain { try await Lab(dir: lab.dir).down() }
  }
}

struct LabDemo: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "demo",
    abstract: "Cloud NAT's central claim, live: kill the controller under traffic, change NAT meanwhile, restart, resync.")
  @Option(help: "The lab's directory (default: a fresh temporary one).") var dir: String?
  @Flag(help: "Print the report as one JSON object.") var json = false
  @Option(help: "Seconds of traffic in each phase.") var phaseSeconds: Double = 4

  func run() async throws {
    try await labMain {
      let directory: String = dir ?? (NSTemporaryDirectory() + "hostnat-demo-\(getpid())")
      let quiet = json
      let say: @Sendable (String) -> Void = { line in if !quiet { print(line) } }
      let runner = LabDemoRunner(lab: Lab(dir: directory, say: say), phaseSeconds: phaseSeconds)
      let report = try await runner.run()
      if quiet { print(report.json()) }
      if !report.passed { throw ExitCode(1) }
    }
  }
}
