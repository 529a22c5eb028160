import ArgumentParser
import Foundation
import HostnatLab
import HostnatTelemetry

/// `hostnat logs read`: the NAT logs of every agent in a lab, like `gcloud logging read`.
struct LogsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "logs", abstract: "Read NAT logs (Cloud NAT's format) across the lab's agents.",
    subcommands: [LogsRead.self])
}

struct LogsRead: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "read",
    abstract: "Print NAT log entries, newest first.",
    discussion: """
      Filter like gcloud logging: FIELD=VALUE, FIELD!=VALUE, FIELD:SUBSTRING, <, <=, >, >=, joined with AND. \
      Example: --filter 'jsonPayload.allocation_status=DROPPED AND jsonPayload.endpoint.vm_name=vm-1'
      """)
  @OptionGroup var lab: LabOptions
  @Option(help: "Filter expression.") var filter: String = ""
  @Option(help: "At most this many entries.") var limit: Int = 50
  @Option(help: "table or json.") var format: String = "table"

  func run() async throws {
    try await labMain {
      guard ["table", "json"].contains(format) else { throw LabError("--format: \(format) is not table or json") }
      guard limit > 0 else { throw LabError("--limit: must be positive") }
      let state = try LabState.load(Lab(dir: lab.dir).dir)
      let files = state.processes.filter { $0.name.hasPrefix("agent/") }.map { $0.stateDir + "/nat.log" }
      let result: NATLogReadResult
      do {
        result = try NATLogReader.read(files: files, filter: filter, limit: limit)
      } catch {
        throw LabError("--filter: \(error)")
      }
      print(format == "json" ? NATLogReader.json(result.lines) : NATLogReader.table(result.lines))
      if result.malformed > 0 {
        FileHandle.standardError.write(Data("\(result.malformed) malformed log lines skipped\n".utf8))
      }
    }
  }
}
