"""Value-based agents (DQN family) and, later, policy agents. One file per family."""
