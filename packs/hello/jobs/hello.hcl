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
        # nomad-init's own heartbeat command: no shell needed, so TOOLBOX=0 images run it too.
        # The message and interval are arguments, never spliced into a script.
        command = "/sbin/nomad-init"
        args    = ["heartbeat", {{ message | hcl_encode() }}, "--interval", "{{ interval }}"]
      }

      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
