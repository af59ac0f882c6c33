"""The example task: two-number addition. Small enough to read in one sitting; see README "Add a new task"."""
