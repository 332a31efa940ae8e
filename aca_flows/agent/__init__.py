"""Agent: executes one task: prompt, tool loop, verification, subtask proposals.

The flow calls ``execute_task`` (one task to one verified commit) and, for subtasks an agent
proposed, ``accept_subtasks`` then ``execute_task`` for each child, as ``execute_task_tree``
shows. Nothing here imports Prefect.
"""

from aca_flows.agent.execute import TaskOutcome, execute_task
from aca_flows.agent.prompt import DependencyContext, build_system_prompt, build_task_prompt
from aca_flows.agent.subtasks import ProposedSubtask, SubtaskProposalError, accept_subtasks
from aca_flows.agent.tools import TaskTools
from aca_flows.agent.tree import execute_task_tree
from aca_flows.agent.verify import VerifyResult

__all__ = [
    "DependencyContext",
    "ProposedSubtask",
    "SubtaskProposalError",
    "TaskOutcome",
    "TaskTools",
    "VerifyResult",
    "accept_subtasks",
    "build_system_prompt",
    "build_task_prompt",
    "execute_task",
    "execute_task_tree",
]
