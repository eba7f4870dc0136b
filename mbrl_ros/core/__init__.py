"""The Stackelberg MBRL game: players, models, NPG and schedules. Never imports ROS."""
