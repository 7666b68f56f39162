"""Version control and CI hosts: GitHub and GitLab, behind one VcsClient interface."""
