import ArgumentParser
import HostnatAdminCLI

/// The gcloud-style admin commands (networks, routers, addresses, instances, hosts), all
/// defined in HostnatAdminCLI; `Hostnat` lists them after its own subcommands.
enum AdminCommands {
  static var all: [any ParsableCommand.Type] { AdminCLI.commands }
}
