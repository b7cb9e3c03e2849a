"""ToolWorkerFunction: runs one long-running tool for the ToolOperationStateMachine (or registers a callback
tool's task token)."""

from chatcore.coldstart import collector_paused

with collector_paused():  # see chatcore.coldstart
    from chatcore.handlers import step_handler
    from chatcore.operation_steps import run_tool

handler = step_handler(run_tool, function="ToolWorkerFunction")
