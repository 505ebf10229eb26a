"""The local ECS agent: a supervisor that runs the service's tasks as ECS would."""
