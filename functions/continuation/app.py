"""ContinuationFunction: the save / continue / finish steps of the ToolOperationStateMachine."""

from chatcore.coldstart import collector_paused

with collector_paused():  # see chatcore.coldstart
    from chatcore.handlers import step_handler
    from chatcore.operation_steps import continuation_step

handler = step_handler(continuation_step, function="ContinuationFunction")
