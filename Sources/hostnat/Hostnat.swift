import ArgumentParser

/// The one hostnat executable: each role and each admin command is a subcommand.
@main
struct Hostnat: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "hostnat",
    abstract: "Cloud NAT's architecture as runnable software: a controller, host agents that translate, and an emulated Internet.",
    version: HostnatVersion.string,
    subcommands: [
      LabCommand.self, ControllerCommand.self, AgentCommand.self, EdgeCommand.self, VMCommand.self, ControlProxyCommand.self, LogsCommand.self, TraceCommand.self, NetnsCommand.self,
    ] + AdminCommands.all + [BenchCommand.self, VersionCommand.self]
  )
}
