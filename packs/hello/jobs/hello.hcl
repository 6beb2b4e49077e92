{#- A system job: one heartbeat task on every client node. -#}
{%- if interval is not number or interval < 1 %}{{ throw(message="`interval` must be a number of seconds, at least 1") }}{% endif -%}
{%- if datacenters | length == 0 %}{{ throw(message="`datacenters` is empty: set it in the agent config or the job table") }}{% endif -%}
job "{{ jobname }}" {
  datacenters = {{ datacenters | hcl_encode() }}
  type        = "system"

  group "{{ jobname }}" {
    task "heartbeat" {
      driver = "raw_exec"

      config {
        command = "/bin/sh"
        # $1 is the message, $2 the interval: passed as arguments, never spliced into the script.
        args = [
          "-c", "while true; do echo \"$1 $(hostname) $(date -u +%Y-%m-%dT%H:%M:%SZ)\"; sleep \"$2\"; done",
          "heartbeat", {{ message | hcl_encode() }}, "{{ interval }}",
        ]
      }

      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
